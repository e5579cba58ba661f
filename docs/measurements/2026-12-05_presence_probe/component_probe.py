"""Throwaway probe 7: after the region trim, keep only the mask's connected components where the
detector sees the category nearly as well as in the best one (score = the component's largest map
value; kept if >= r x the best). gIoU per r on 200 val / test scenes (first queries)."""
import cv2
import numpy as np, torch
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.eval.metrics import mask_iou
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

p = Predictor.from_pretrained(presence=False)
gate, kb, cfg = p.reasoner.gate, load_knowledge(), SceneConfig()
RATIOS = (0.0, 0.3, 0.5, 0.7, 0.9)
for seed, split in ((2, "val"), (3, "test")):
    ious = {r: [] for r in RATIOS}
    for index in range(200):
        s = make_sample(seed, split, index, cfg, kb)
        with torch.inference_mode():
            reasoning = p.reasoner.reason(s.scene.image, s.queries[0].text)
            pred, _ = p.segment(s.scene.image, reasoning)
            region = gate.region(reasoning.sight, reasoning.categories[:1], s.scene.image.shape[:2], "pad")[0].numpy()
        n, labels = cv2.connectedComponents(pred.mask.astype(np.uint8), connectivity=8)
        scores = [region[labels == k].max() for k in range(1, n)]
        for r in RATIOS:
            keep = [k + 1 for k, sc in enumerate(scores) if sc >= r * max(scores)] if scores else []
            ious[r].append(mask_iou(np.isin(labels, keep) & pred.mask, s.target_mask))
    print(split, {r: round(float(np.mean(v)), 4) for r, v in ious.items()}, flush=True)
