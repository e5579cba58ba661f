"""Measure "several instances": "all the <kind>" queries on generated scenes, instance counts from
the answer's connected components (the node's instance_mode 'components')."""

from __future__ import annotations

from collections import Counter

import numpy as np
from tqdm import tqdm

from keyseg_core.eval.metrics import mask_iou
from keyseg_core.eval.presence import check_generated_split
from keyseg_core.inference.instances import split_instances
from keyseg_core.scenes.eval_queries import multi_instance_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge


def instance_report(predictor, seed: int, split: str, scenes: int, min_area: int = 20,
                    progress: bool = True) -> dict:
    """Count accuracy, count error and union IoU over the scenes 0..N-1 that hold two or more objects
    of a kind (the others are skipped and counted)."""
    check_generated_split(split, scenes)
    kb, config = load_knowledge(), SceneConfig()
    right, errors, ious, counts, skipped = [], [], [], Counter(), 0
    for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
        sample = make_sample(seed, split, index, config, kb)
        rng = np.random.default_rng([seed, SPLIT_IDS[split], index, 0x1257])
        query = multi_instance_query(sample.scene.objects, kb, rng, test=split == "test")
        if query is None:
            skipped += 1
            continue
        prediction = predictor.predict(sample.scene.image, query.text)
        found = len(split_instances(prediction.mask, "components", min_area))
        truth = np.zeros(prediction.mask.shape, bool)
        for category in query.targets:
            truth |= sample.scene.mask(category).astype(bool)
        ious.append(mask_iou(prediction.mask, truth))
        right.append(found == len(query.targets))
        errors.append(found - len(query.targets))
        counts[f"{len(query.targets)} asked, {found} found"] += 1
    if not right:
        raise ValueError(f"none of scenes 0-{scenes - 1} of {split} holds two objects of one kind")
    return {"measured_on": f"generated {split}, seed {seed}, scenes 0-{scenes - 1}", "queries": len(right),
            "skipped_scenes": skipped, "min_instance_area": min_area,
            "count_accuracy": float(np.mean(right)), "mean_count_error": float(np.mean(errors)),
            "mean_abs_count_error": float(np.mean(np.abs(errors))), "union_miou": float(np.mean(ious)),
            "target": {"count_accuracy": 0.9}, "outcomes": dict(counts.most_common())}
