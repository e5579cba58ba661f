"""Throwaway probe: does a logistic combination of the presence signals (the gate's category mass and
the mask's area, score and mass) separate present from absent targets better than the mass alone?
Fit on val (eval-presence's queries, seed 2), measured on test (seed 3) at <= 5% val misses.

    python docs/measurements/2026-12-05_signal_probe/combine_probe.py [SCENES]
"""
import sys

import numpy as np
import torch

from keyseg_core.eval.presence import collect
from keyseg_core.inference.presence import roc_auc, threshold_for_miss
from keyseg_core.runtime.predictor import Predictor

scenes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
p = Predictor.from_pretrained()
val, test = collect(p, 2, "val", scenes, progress=False), collect(p, 3, "test", scenes, progress=False)


def features(split, names):
    def side(d):
        return np.stack([np.log(np.clip(d[n], 1e-6, None)) for n in names], 1)
    x = np.concatenate([side(split.present), side(split.absent)])
    y = np.concatenate([np.ones(len(split.present[names[0]])), np.zeros(len(split.absent[names[0]]))])
    return torch.tensor(x), torch.tensor(y)


for names in (["category"], ["category", "area"], ["category", "score"], ["category", "mass"],
              ["category", "area", "score", "mass"]):
    xv, yv = features(val, names)
    mean, std = xv.mean(0), xv.std(0) + 1e-9
    w = torch.zeros(len(names) + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        opt.zero_grad()
        z = ((xv - mean) / std) @ w[:-1] + w[-1]
        value = torch.nn.functional.binary_cross_entropy_with_logits(z, yv)
        value.backward()
        return value
    opt.step(loss)
    xt, yt = features(test, names)
    with torch.no_grad():
        zv = (((xv - mean) / std) @ w[:-1] + w[-1]).numpy()
        zt = (((xt - mean) / std) @ w[:-1] + w[-1]).numpy()
    t = threshold_for_miss(zv[yv.numpy() == 1], 0.05)
    pos, neg = zt[yt.numpy() == 1], zt[yt.numpy() == 0]
    print(f"{'+'.join(names):>30}: test AUC {roc_auc(pos, neg):.3f}  false positives {np.mean(neg > t):.1%}  "
          f"misses {np.mean(pos <= t):.1%}  (val AUC {roc_auc(zv[yv.numpy() == 1], zv[yv.numpy() == 0]):.3f})")
