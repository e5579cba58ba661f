"""Compare presence signals on the cache signals_probe.py wrote: python compare.py CACHE.json"""
import json
import sys

import numpy as np
import torch

rows = json.load(open(sys.argv[1]))


def arrays(split, types=("single", "absent")):
    r = [x for x in rows[split] if x["type"] in types]
    L = torch.tensor([x["logits"] for x in r])
    V = torch.tensor([x["visible"] for x in r])
    A = torch.tensor([x["area"] for x in r])
    present = np.array([x["present"] for x in r])
    return L, V, A, present


def signals(L, V, A):
    p = L.softmax(-1)
    g = p * V
    top = g.argmax(-1)
    ptop = p.argmax(-1)
    ent = -(p * p.clamp_min(1e-12).log()).sum(-1)
    out = {
        "sum g (shipped)": g.sum(-1),
        "max g": g.amax(-1),
        "max g / max p": g.amax(-1) / p.amax(-1),
        "P(argmax p)": V.gather(1, ptop[:, None])[:, 0],
        "sum g / sum V": g.sum(-1) / V.sum(-1),
        "sum g, V^2": (p * V ** 2).sum(-1),
        "sum g, V>0.5": (p * (V > 0.5)).sum(-1),
        "p(argmax g)": p.gather(1, top[:, None])[:, 0],
        "sum g * (1 - ent/ln60)": g.sum(-1) * (1 - ent / np.log(60)),
    }
    for k in (2.0, 4.0):
        out[f"sum p V^{k:g}"] = (p * V ** k).sum(-1)
    return {k: v.numpy() for k, v in out.items()}


def auc(pos, neg):
    return float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())


val, test = signals(*arrays("val")[:3]), signals(*arrays("test")[:3])
pv, pt = arrays("val")[3], arrays("test")[3]
print(f"| signal | test AUC | val threshold (<= 5% misses) | test false positives | test misses |")
for name in val:
    threshold = np.quantile(val[name][pv], 0.05)
    fp = float((test[name][~pt] >= threshold).mean())
    miss = float((test[name][pt] < threshold).mean())
    print(f"| {name} | {auc(test[name][pt], test[name][~pt]):.3f} | {threshold:.4f} | {fp:.1%} | {miss:.1%} |")


print()
print("| share | val count right | test count right | test single targets kept one |")
for share in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4):
    cells = []
    for split in ("val", "test"):
        L, V, _, _ = arrays(split, ("all",))
        g = L.softmax(-1) * V
        probs = g / g.sum(-1, keepdim=True)
        counts = (probs >= share).sum(-1).clamp(min=1).numpy()
        asked = np.array([len(x["target"]) for x in rows[split] if x["type"] == "all"])
        cells.append(float((counts == asked).mean()))
    L, V, _, _ = arrays("test", ("single",))
    g = L.softmax(-1) * V
    probs = g / g.sum(-1, keepdim=True)
    cells.append(float(((probs >= share).sum(-1) <= 1).float().mean()))
    print(f"| {share} | {cells[0]:.1%} | {cells[1]:.1%} | {cells[2]:.1%} |")
