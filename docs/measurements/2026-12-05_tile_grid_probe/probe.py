"""Throwaway probe: does the category detector see small objects better on finer tiles? The shipped
detector averages the whole frame's visibility with the max over four corner tiles of 0.6 of the frame
(each resized to the tower's 128 px). Here, per scene of val (seed 2) and test (seed 3): the codebook
logits of its first query, eval-presence's absent query and eval-instances' "all the <kind>" query,
and the raw visibility (largest patch probability) of each category on the frame, the 2x2 tiles of 0.6
(shipped), 3x3 grids of 0.45 and 0.5, and the mirrored frame. compare.py scores the combinations.

    python docs/measurements/2026-12-05_tile_grid_probe/probe.py OUT.pt [SCENES]
"""
import sys

import numpy as np
import torch

from keyseg_core.eval.instances import instance_rng
from keyseg_core.eval.presence import absent_rng
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes.eval_queries import absent_query, multi_instance_query
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

out_path = sys.argv[1]
scenes = int(sys.argv[2]) if len(sys.argv) > 2 else 200
torch.set_num_threads(1)
p = Predictor.from_pretrained(presence=False)
kb, cfg = load_knowledge(), SceneConfig()
names = p.reasoner.gate.names
GRIDS = {"tiles 2x2 of 0.6": (0.6, 2), "tiles 3x3 of 0.45": (0.45, 3), "tiles 3x3 of 0.5": (0.5, 3),
         "tiles 4x4 of 0.35": (0.35, 4)}


def tiles(image, fraction, grid):
    h, w = image.shape[:2]
    th, tw = int(h * fraction), int(w * fraction)
    return [np.ascontiguousarray(image[y:y + th, x:x + tw])
            for y in np.linspace(0, h - th, grid).astype(int) for x in np.linspace(0, w - tw, grid).astype(int)]


def raw_visibility(images):
    """(n, K) each image's largest patch probability of each category."""
    pixels = torch.stack([p.processor.preprocess_clip(im) for im in images])
    return p.reasoner.gate.sight(pixels).amax(1)


cache = {}
for seed, split in ((2, "val"), (3, "test")):
    rows = []
    for index in range(scenes):
        s = make_sample(seed, split, index, cfg, kb)
        qa = absent_query(s.scene.objects, kb, absent_rng(seed, split, index), test=split == "test")
        qm = multi_instance_query(s.scene.objects, kb, instance_rng(seed, split, index), test=split == "test")
        texts = [s.queries[0].text, qa.text] + ([qm.text] if qm else [])
        image = s.scene.image
        with torch.no_grad():
            batch = p.processor([image] * len(texts), texts)
            reasoned, _ = p.reasoner.reason_batch(batch, texts, images=[image] * len(texts))
            views = {"full": raw_visibility([image])[0],
                     "flipped": raw_visibility([np.ascontiguousarray(image[:, ::-1])])[0]}
            for name, (fraction, grid) in GRIDS.items():
                views[name] = raw_visibility(tiles(image, fraction, grid)).amax(0)
        in_view = sorted({names.index(o.category) for o in s.scene.objects})
        targets = ([names.index(s.keyword)], [names.index(qa.spec.target)]) + (
            ([names.index(t) for t in qm.targets],) if qm else ())
        for j, target in enumerate(targets):
            rows.append(dict(type=("single", "absent", "all")[j], target=target, in_view=in_view,
                             logits=reasoned.prompt_logits[j].float(), views={k: v.float() for k, v in views.items()}))
        if index % 50 == 0:
            print(split, index, flush=True)
    cache[split] = rows
torch.save({"names": names, "cache": cache}, out_path)
