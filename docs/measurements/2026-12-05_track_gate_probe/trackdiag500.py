import pickle, sys
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence
from keyseg_core.eval.tracking import _model_masks
p = Predictor.from_pretrained()
out = {}
for speed, stride in [(6.0, 3), (2.0, 3), (6.0, 1)]:
    rows = []
    for s in range(20):
        seq = generate_sequence(60 * stride, seed=500 + s, speed=speed)
        ans = _model_masks(p, seq, stride)
        rows.append(dict(masks=[m for m, _ in ans], kw=[k for _, k in ans], truth=[t.astype(bool) for t in seq.masks[::stride]]))
    out[(speed, stride)] = rows
    print(speed, stride, flush=True)
pickle.dump(out, open("out/trackdiag500.pkl", "wb"))
