"""Cache the shipped model's streamed masks on the 20 test sequences (seed 100) at drift 6, stride 3 (for diag.py)."""
import pickle, sys
import numpy as np
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence
from keyseg_core.eval.tracking import _model_masks
p = Predictor.from_pretrained(); rows = []
for s in range(20):
    seq = generate_sequence(60 * 3, seed=100 + s, speed=6.0)
    ans = _model_masks(p, seq, 3)
    rows.append(dict(masks=[np.packbits(m.astype(bool)) for m, _ in ans], shape=ans[0][0].shape, kw=[k for _, k in ans]))
pickle.dump({(6.0, 3): rows}, open("/tmp/trk/model100_63.pkl", "wb"))
