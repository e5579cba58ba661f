"""Score visibility combinations on a probe.py cache, each calibrated over the val (scene, category)
pairs by `keyseg attach-detector`'s own fit (eval.visibility.fit_calibration): pair AUC, "not here"
(the presence signal sum p V; test false positives and misses at the val threshold for <= 5% misses)
and "all the <kind>" counts (the share chosen on val).    python compare.py CACHE.pt"""
import sys

import numpy as np
import torch

from keyseg_core.eval.visibility import fit_calibration
from keyseg_core.inference.presence import roc_auc


def logit(v):
    return torch.logit(v, eps=1e-6)


def auc(pos, neg):
    return roc_auc(np.asarray(pos), np.asarray(neg))


def rows(cache, split, types):
    return [r for r in cache[split] if r["type"] in types]


def stack(rs, combine):
    L = torch.stack([r["logits"] for r in rs])
    V = torch.stack([combine(r["views"]) for r in rs])
    present = torch.zeros_like(V, dtype=torch.bool)
    for i, r in enumerate(rs):
        present[i, r["in_view"]] = True
    return L, V, present


def mean(*keys):
    return lambda v: sum(v[k] for k in keys) / len(keys)


def mean_of_max(first, *keys):
    return lambda v: (v[first] + torch.stack([v[k] for k in keys]).amax(0)) / 2


def main() -> None:
    cache = torch.load(sys.argv[1])["cache"]
    T2, T3, T35, T4 = "tiles 2x2 of 0.6", "tiles 3x3 of 0.45", "tiles 3x3 of 0.5", "tiles 4x4 of 0.35"
    variants = {
        "frame alone": lambda v: v["full"],
        "mean(frame, 2x2 of 0.6) (shipped)": mean("full", T2),
        "mean(frame, 3x3 of 0.5)": mean("full", T35),
        "mean(frame, 3x3 of 0.45)": mean("full", T3),
        "mean(frame, 4x4 of 0.35)": mean("full", T4),
        "mean(frame, 2x2, 3x3 of 0.5)": mean("full", T2, T35),
        "mean(frame, 2x2, 3x3 of 0.45)": mean("full", T2, T3),
        "mean(frame, 2x2, 3x3 of 0.45, 4x4)": mean("full", T2, T3, T4),
        "mean(frame, flipped, 2x2)": mean("full", "flipped", T2),
        "mean(frame, max(2x2, 3x3 of 0.45))": mean_of_max("full", T2, T3),
    }
    print("| visibility | pair AUC val / test | presence AUC test | false positives | misses | share | "
          "count right val | count right test |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, combine in variants.items():
        _, Vv, Pv = stack(rows(cache, "val", ("single",)), combine)
        a, b = fit_calibration(Vv, Pv)

        def calibrated(rs):
            L, V, P = stack(rs, combine)
            return L, torch.sigmoid(a * logit(V) + b), P
        pair = []
        for split in ("val", "test"):
            _, V, P = calibrated(rows(cache, split, ("single",)))
            pair.append(auc(V[P].numpy(), V[~P].numpy()))
        mass = {}
        for split in ("val", "test"):
            rs = rows(cache, split, ("single", "absent"))
            L, V, _ = calibrated(rs)
            mass[split] = ((L.softmax(-1) * V).sum(-1).numpy(), np.array([r["type"] == "single" for r in rs]))
        (mv, pv), (mt, pt) = mass["val"], mass["test"]
        threshold = np.quantile(mv[pv], 0.05)
        fp, miss = float((mt[~pt] >= threshold).mean()), float((mt[pt] < threshold).mean())
        counts = {}
        for split in ("val", "test"):
            rs = rows(cache, split, ("all",))
            L, V, _ = calibrated(rs)
            g = L.softmax(-1) * V
            counts[split] = (g / g.sum(-1, keepdim=True), np.array([len(r["target"]) for r in rs]))
        shares = (0.05, 0.075, 0.1, 0.125, 0.15, 0.2)

        def right(split, share):
            probs, asked = counts[split]
            return float(((probs >= share).sum(-1).clamp(min=1).numpy() == asked).mean())
        val_right = [right("val", s) for s in shares]
        share = shares[int(np.argmax(val_right))]
        print(f"| {name} | {pair[0]:.4f} / {pair[1]:.4f} | {auc(mt[pt], mt[~pt]):.3f} | {fp:.1%} | {miss:.1%} | "
              f"{share} | {max(val_right):.1%} | {right('test', share):.1%} |")


if __name__ == "__main__":
    main()
