"""Throwaway probe: which presence signal, from what the gate already computes, separates present from
absent targets best, and at which share "all the <kind>" queries are counted right? Per scene of val
(seed 2) and test (seed 3): its first query, eval-presence's absent query and eval-instances' "all the
<kind>" query (where the scene has one); the codebook's logits and the detector's visibility are
cached for compare.py.

    python docs/measurements/2026-12-05_signal_probe/signals_probe.py CHECKPOINT OUT.json [SCENES]
"""
import json
import sys

import numpy as np
import torch

from keyseg_core.eval.instances import instance_rng
from keyseg_core.eval.presence import absent_rng
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.eval_queries import absent_query, multi_instance_query
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

checkpoint, out_path = sys.argv[1], sys.argv[2]
scenes = int(sys.argv[3]) if len(sys.argv) > 3 else 200
p = Predictor.from_pretrained(checkpoint, presence=False)
kb, cfg = load_knowledge(), SceneConfig()
names = p.reasoner.gate.names
rows = {}
for seed, split in ((2, "val"), (3, "test")):
    out = []
    for index in range(scenes):
        s = make_sample(seed, split, index, cfg, kb)
        qa = absent_query(s.scene.objects, kb, absent_rng(seed, split, index), test=split == "test")
        qm = multi_instance_query(s.scene.objects, kb, instance_rng(seed, split, index), test=split == "test")
        texts = [s.queries[0].text, qa.text] + ([qm.text] if qm else [])
        with torch.no_grad():
            batch = p.processor([s.scene.image] * len(texts), texts)
            reasoned, _ = p.reasoner.reason_batch(batch, texts)
            sight = p.reasoner.sight(batch.clip_pixels)
            h, w = s.scene.image.shape[:2]
            th, tw = int(h * 0.6), int(w * 0.6)
            tiles = [s.scene.image[y:y + th, x:x + tw] for y in (0, h - th) for x in (0, w - tw)]
            tiled = p.reasoner.gate.sight(torch.stack([p.processor.preprocess_clip(np.ascontiguousarray(t))
                                                       for t in tiles])).amax(1).amax(0)
        for j, target in enumerate((s.keyword, qa.spec.target) + ((qm.targets,) if qm else ())):
            out.append(dict(present=j != 1, type=("single", "absent", "all")[j],
                            target=[names.index(t) for t in target] if j == 2 else names.index(target),
                            n_objects=len(s.scene.objects),
                            logits=reasoned.prompt_logits[j].tolist(), visible=sight[j].amax(0).tolist(),
                            area=(sight[j] > 0.5).float().sum(0).tolist(), tiled=tiled.tolist(),
                            in_view=[names.index(o.category) for o in s.scene.objects]))
    rows[split] = out
with open(out_path, "w") as f:
    json.dump(rows, f)
