"""Cache the shipped model's streamed masks on generated moving sequences (seed 500+: the set the
track gate was chosen on), so tracker variants can be compared offline."""
import pickle, sys, time
import numpy as np
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence
from keyseg_core.eval.tracking import _model_masks
seed = int(sys.argv[1]); out_path = sys.argv[2]
p = Predictor.from_pretrained()
out = {}
for speed, stride in [(6.0, 3), (2.0, 3), (6.0, 1), (2.0, 1)]:
    t = time.time(); rows = []
    for s in range(20):
        seq = generate_sequence(60 * stride, seed=seed + s, speed=speed)
        ans = _model_masks(p, seq, stride)
        rows.append(dict(masks=[np.packbits(m.astype(bool)) for m, _ in ans], shape=ans[0][0].shape,
                         kw=[k for _, k in ans]))
    out[(speed, stride)] = rows
    print(speed, stride, f"{time.time()-t:.0f}s", flush=True)
    pickle.dump(out, open(out_path, "wb"))
