"""Does the mask land on what the keyword names? On generated scenes every object's mask is known, so
an answer can be checked against the object its own keyword names, not only against the target: a
keyword over a mask of something else is worse than no answer for a robot that acts on both."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from tqdm import tqdm

from keyseg_core.eval.metrics import mask_iou
from keyseg_core.eval.presence import check_generated_split
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge


def named_report(predictor, seed: int, split: str, scenes: int, progress: bool = True) -> dict:
    """Over the first query of scenes 0..N-1, overall and per query type: IoU with the target; how
    often the keyword names an object in the scene; IoU with that named object; how often the mask
    covers the named object more than any other ("on named"); how often both keyword and mask are
    the target's ("both right": keyword right and the mask mostly on the target)."""
    check_generated_split(split, scenes)
    kb, config = load_knowledge(), SceneConfig()
    rows: dict[str, list[dict]] = defaultdict(list)
    for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
        sample = make_sample(seed, split, index, config, kb)
        query = sample.queries[0]
        prediction = predictor.predict(sample.scene.image, query.text)
        categories = [o.category for o in sample.scene.objects]
        masks = [sample.scene.labels == k + 1 for k in range(len(categories))]
        cover = [int((prediction.mask & m).sum()) for m in masks]
        mostly = int(np.argmax(cover)) if max(cover) > 0 else None
        target = categories.index(sample.keyword)
        named = categories.index(prediction.keyword) if prediction.keyword in categories else None
        rows[query.spec.type].append({
            "target_iou": mask_iou(prediction.mask, masks[target]),
            "named_iou": None if named is None else mask_iou(prediction.mask, masks[named]),
            "on_named": None if named is None else mostly == named,
            "both_right": prediction.keyword == sample.keyword and mostly == target,
        })
    report = {"measured_on": f"generated {split}, seed {seed}, scenes 0-{scenes - 1}, first query each",
              "all": _summary([r for rs in rows.values() for r in rs])}
    report["by_type"] = {kind: _summary(rs) for kind, rs in sorted(rows.items())}
    return report


def _summary(rows: list[dict]) -> dict:
    named = [r for r in rows if r["named_iou"] is not None]
    return {
        "queries": len(rows),
        "target_iou": float(np.mean([r["target_iou"] for r in rows])),
        "keyword_names_an_object": len(named),
        "named_iou": float(np.mean([r["named_iou"] for r in named])) if named else None,
        "on_named": float(np.mean([r["on_named"] for r in named])) if named else None,
        "both_right": float(np.mean([r["both_right"] for r in rows])),
    }
