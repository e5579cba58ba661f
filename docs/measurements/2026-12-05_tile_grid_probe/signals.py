"""Other "not here" signals from the same probe.py cache, the visibility as shipped (the mean of the
frame's and the 2x2 tiles', calibrated on val pairs): the share of belief in view (shipped, 'mass'),
the best gated belief over the best belief ('ratio'), a sharpened or flattened belief, the top-k's,
and a logistic regression over six of them fitted on val (5-fold scores on val choose the threshold).
Threshold for <= 5% misses on val; false positives and misses on test.   python signals.py CACHE.pt"""
import sys

import numpy as np
import torch

from compare import auc, fit_calibration, logit, mean, rows, stack

cache = torch.load(sys.argv[1])["cache"]
combine = mean("full", "tiles 2x2 of 0.6")
_, Vv, Pv = stack(rows(cache, "val", ("single",)), combine)
a, b = fit_calibration(Vv, Pv)
EPS = 1e-6


def split_data(split):
    rs = rows(cache, split, ("single", "absent"))
    L = torch.stack([r["logits"] for r in rs])
    frame = torch.stack([r["views"]["full"] for r in rs])
    tiles = torch.stack([r["views"]["tiles 2x2 of 0.6"] for r in rs])
    return L, frame, tiles, np.array([r["type"] == "single" for r in rs])


def visible(frame, tiles):
    return torch.sigmoid(a * logit((frame + tiles) / 2) + b)


def sharp(t):
    return lambda L, frame, tiles: ((L * t).softmax(-1) * visible(frame, tiles)).sum(-1)


def top(k):
    def signal(L, frame, tiles):
        p, i = L.softmax(-1).topk(k, -1)
        return (p * visible(frame, tiles).gather(-1, i)).sum(-1) / p.sum(-1)
    return signal


def ratio(L, frame, tiles):
    p = L.softmax(-1)
    return (p * visible(frame, tiles)).amax(-1) / p.amax(-1)


def features(L, frame, tiles):
    p = L.softmax(-1)
    g = p * visible(frame, tiles)
    best = p.argmax(-1, keepdim=True)
    return torch.stack([g.sum(-1).clamp(min=EPS).log(), (g.amax(-1) / p.amax(-1)).clamp(min=EPS).log(),
                        p.amax(-1).log(), logit(frame.gather(-1, best)[:, 0]), logit(tiles.gather(-1, best)[:, 0]),
                        -(p * p.clamp(min=EPS).log()).sum(-1)], -1)


def fit_logistic(X, y, wd):
    w, bias = torch.zeros(X.shape[1], requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, bias], max_iter=300)
    target = torch.tensor(y, dtype=torch.float32)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(X @ w + bias, target) + wd * w.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return lambda Z: (Z @ w + bias).detach().numpy()


def report(name, sv, yv, st, yt):
    th = np.quantile(sv[yv], 0.05)
    print(f"| {name} | {auc(sv[yv], sv[~yv]):.3f} | {(sv[~yv] >= th).mean():.1%} | {auc(st[yt], st[~yt]):.3f} | "
          f"{(st[~yt] >= th).mean():.1%} | {(st[yt] < th).mean():.1%} |")


val, test = split_data("val"), split_data("test")
print("| signal | val AUC | val false positives | test AUC | test false positives | test misses |")
print("|---|---:|---:|---:|---:|---:|")
signals = {"mass (shipped)": sharp(1.0), "ratio": ratio, "mass, belief sharpened (x2)": sharp(2.0),
           "mass, belief sharpened (x3)": sharp(3.0), "mass, belief flattened (x0.5)": sharp(0.5),
           "top-1's visibility": top(1), "top-3's visibility": top(3),
           "mass x ratio": lambda *x: sharp(1.0)(*x) * ratio(*x)}
for name, signal in signals.items():
    report(name, signal(*val[:3]).numpy(), val[3], signal(*test[:3]).numpy(), test[3])
Xv, Xt = features(*val[:3]), features(*test[:3])
mu, sd = Xv.mean(0), Xv.std(0)
Zv, Zt = (Xv - mu) / sd, (Xt - mu) / sd
folds = np.arange(len(Zv)) % 5
for wd in (0.1, 0.01, 0.001):
    cv = np.zeros(len(Zv))
    for k in range(5):
        cv[folds == k] = fit_logistic(Zv[folds != k], val[3][folds != k], wd)(Zv[folds == k])
    report(f"logistic regression of six (weight decay {wd})", cv, val[3], fit_logistic(Zv, val[3], wd)(Zt), test[3])
