"""Throwaway probe: the category detector misses present objects (instances: 51-60 of 270 "all the
<kind>" queries undercount because a member's visibility is < 0.5). Does looking at tiles of the frame
too (each tile resized to the tower's 128 px, so objects appear larger) raise recall without seeing
absent categories? Per (scene, category) of val/test scenes 0-199: visibility of the whole frame,
of the tiles, of the mirrored frame, and their max or mean; AUC present vs absent and recall at the whole frame's false-positive rate.

    python docs/measurements/2026-12-05_signal_probe/tiles_probe.py [SCENES]
"""
import sys

import numpy as np
import torch

from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

scenes = int(sys.argv[1]) if len(sys.argv) > 1 else 200
p = Predictor.from_pretrained(presence=False)
kb, cfg = load_knowledge(), SceneConfig()
names = p.reasoner.gate.names


def tiles(image, fraction, overlap_grid):
    h, w = image.shape[:2]
    th, tw = int(h * fraction), int(w * fraction)
    out = []
    for y in np.linspace(0, h - th, overlap_grid).astype(int):
        for x in np.linspace(0, w - tw, overlap_grid).astype(int):
            out.append(np.ascontiguousarray(image[y:y + th, x:x + tw]))
    return out


def visibility(images):
    with torch.no_grad():
        pixels = torch.stack([p.processor.preprocess_clip(im) for im in images])
        return p.reasoner.gate.sight(pixels).amax(1)  # (n, K)


results = {}
for seed, split in ((2, "val"), (3, "test")):
    full, t2, t3, truth = [], [], [], []
    for index in range(scenes):
        s = make_sample(seed, split, index, cfg, kb)
        present = torch.zeros(len(names), dtype=torch.bool)
        present[[names.index(o.category) for o in s.scene.objects]] = True
        full.append(visibility([s.scene.image])[0])
        t2.append(visibility(tiles(s.scene.image, 0.6, 2)).amax(0))
        t3.append(visibility([np.ascontiguousarray(s.scene.image[:, ::-1])])[0])
        truth.append(present)
    results[split] = {"full": torch.stack(full), "tiles 2x2 of 0.6": torch.stack(t2), "flipped": torch.stack(t3),
                      "truth": torch.stack(truth)}


def auc(pos, neg):
    pos, neg = np.sort(pos), np.sort(neg)
    return float(np.searchsorted(neg, pos, side="left").sum() + 0.5 * (np.searchsorted(neg, pos, side="right")
                 - np.searchsorted(neg, pos, side="left")).sum()) / (len(pos) * len(neg))


for split, r in results.items():
    truth = r["truth"].numpy()
    print(f"== {split}: {truth.sum()} present (scene, category) pairs, {(~truth).sum()} absent")
    variants = {k: v.numpy() for k, v in r.items() if k != "truth"}
    variants["max(full, 2x2)"] = np.maximum(variants["full"], variants["tiles 2x2 of 0.6"])
    variants["mean(full, flipped)"] = (variants["full"] + variants["flipped"]) / 2
    variants["mean(full, flipped, 2x2)"] = (variants["full"] + variants["flipped"] + variants["tiles 2x2 of 0.6"]) / 3
    variants["mean(full, 2x2)"] = (variants["full"] + variants["tiles 2x2 of 0.6"]) / 2
    for name, v in variants.items():
        pos, neg = v[truth], v[~truth]
        print(f"{name:>18}: AUC {auc(pos, neg):.4f}  recall@0.5 {np.mean(pos >= 0.5):.3f}  "
              f"absent>=0.5 {np.mean(neg >= 0.5):.4f}  recall at 1% absent {np.mean(pos >= np.quantile(neg, 0.99)):.3f}")
