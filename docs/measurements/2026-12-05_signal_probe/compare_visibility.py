"""Compare visibility variants for the gate on a signals_probe.py cache: the whole frame's V (shipped),
V calibrated by a logistic fit on logit(V) over val (scene, category) pairs, the mean of the whole
frame's and the 2x2 tiles' V, and that mean calibrated. For each: the presence signal sum(p V) (test
AUC, false positives and misses at the val threshold for <= 5% misses) and "all the <kind>" counts
(share chosen on val).     python compare_visibility.py CACHE.json"""
import json
import sys

import numpy as np
import torch

rows = json.load(open(sys.argv[1]))


def logit(v):
    v = v.clamp(1e-6, 1 - 1e-6)
    return (v / (1 - v)).log()


def fit_calibration(V, present):
    """a, b of sigmoid(a logit(V) + b) by logistic regression on (scene, category) pairs."""
    x, y = logit(V).flatten(), present.flatten().float()
    a, b = torch.ones((), requires_grad=True), torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([a, b], max_iter=200)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(a * x + b, y)
        loss.backward()
        return loss
    opt.step(closure)
    return float(a), float(b)


def tensors(split, types):
    r = [x for x in rows[split] if x["type"] in types]
    L = torch.tensor([x["logits"] for x in r])
    V = torch.tensor([x["visible"] for x in r])
    T = torch.tensor([x["tiled"] for x in r])
    present = torch.zeros_like(V, dtype=torch.bool)
    for i, x in enumerate(r):
        present[i, x["in_view"]] = True
    return r, L, V, T, present


def auc(pos, neg):
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


variants = {"V (shipped)": lambda V, T: V, "mean(V, tiles)": lambda V, T: (V + T) / 2,
            "max(V, tiles)": lambda V, T: torch.maximum(V, T)}
_, _, Vv, Tv, Pv = tensors("val", ("single",))
calibrations = {}
for name in list(variants):
    a, b = fit_calibration(variants[name](Vv, Tv), Pv)
    calibrations[name] = (a, b)
    variants[name + f", calibrated ({a:.2f}, {b:.2f})"] = (lambda f, a, b: lambda V, T: torch.sigmoid(a * logit(f(V, T)) + b))(variants[name], a, b)

print("| visibility | test AUC | false positives | misses | share (val) | val count right | test count right | test single kept one |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, f in variants.items():
    mass = {}
    for split in ("val", "test"):
        r, L, V, T, _ = tensors(split, ("single", "absent"))
        mass[split] = ((L.softmax(-1) * f(V, T)).sum(-1).numpy(), np.array([x["present"] for x in r]))
    (mv, pv), (mt, pt) = mass["val"], mass["test"]
    threshold = np.quantile(mv[pv], 0.05)
    fp, miss = float((mt[~pt] >= threshold).mean()), float((mt[pt] < threshold).mean())
    counts = {}
    for split in ("val", "test"):
        r, L, V, T, _ = tensors(split, ("all",))
        g = L.softmax(-1) * f(V, T)
        probs = g / g.sum(-1, keepdim=True)
        asked = np.array([len(x["target"]) for x in r])
        counts[split] = (probs, asked)
    shares = (0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25)
    val_right = [float((((counts["val"][0] >= s).sum(-1).clamp(min=1)).numpy() == counts["val"][1]).mean()) for s in shares]
    share = shares[int(np.argmax(val_right))]
    test_right = float((((counts["test"][0] >= share).sum(-1).clamp(min=1)).numpy() == counts["test"][1]).mean())
    _, L, V, T, _ = tensors("test", ("single",))
    g = L.softmax(-1) * f(V, T)
    single = float(((g / g.sum(-1, keepdim=True) >= share).sum(-1) <= 1).float().mean())
    print(f"| {name} | {auc(mt[pt], mt[~pt]):.3f} | {fp:.1%} | {miss:.1%} | {share} | {max(val_right):.1%} | "
          f"{test_right:.1%} | {single:.1%} |")
