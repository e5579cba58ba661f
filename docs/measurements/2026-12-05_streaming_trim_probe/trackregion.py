import numpy as np
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence
from keyseg_core.eval.tracking import _model_masks
from keyseg_core.inference.tracking import mask_iou
for rt in (0.02, 0.0):
    p = Predictor.from_pretrained(region_threshold=rt, refine="none")
    for s in (1, 11):
        seq = generate_sequence(60 * 3, seed=100 + s, speed=6.0)
        ans = _model_masks(p, seq, 3)
        ious = [mask_iou(m, t.astype(bool)) for (m, _), t in zip(ans, seq.masks[::3])]
        print(rt, s, "non-empty", sum(m.any() for m, _ in ans), "found(iou>0.1)", sum(i > 0.1 for i in ious), "mean iou", round(np.mean(ious), 3), flush=True)
