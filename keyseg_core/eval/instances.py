"""Measure "several instances": "all the <kind>" queries on generated scenes, instances counted as the
node counts them (`instance_mode` 'components': connected components of the answer's mask;
'categories': the category gate's instances, each with its own mask). In 'categories' mode each
scene's own single-target query is asked too: how often it stays one instance is the price."""

from __future__ import annotations

from collections import Counter

import numpy as np
from tqdm import tqdm

from keyseg_core.eval.metrics import mask_iou
from keyseg_core.eval.presence import check_generated_split
from keyseg_core.inference.instances import prediction_instances
from keyseg_core.scenes.eval_queries import multi_instance_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge


def instance_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The "all the <kind>" query's draw for one scene: a function of (seed, split, index) only."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index, 0x1257])


def instance_report(predictor, seed: int, split: str, scenes: int, min_area: int = 20,
                    progress: bool = True, mode: str = "components") -> dict:
    """Count accuracy, count error and union IoU over the scenes 0..N-1 that hold two or more objects
    of a kind (the others are skipped and counted); in 'categories' mode also how often the right set
    of categories is found, and how often single-target queries stay one instance."""
    check_generated_split(split, scenes)
    if mode not in ("components", "categories"):
        raise ValueError(f"instance mode {mode!r}: must be components or categories")
    kb, config = load_knowledge(), SceneConfig()
    right, errors, ious, counts, skipped = [], [], [], Counter(), 0
    same_set, single_one = [], []
    for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
        sample = make_sample(seed, split, index, config, kb)
        query = multi_instance_query(sample.scene.objects, kb, instance_rng(seed, split, index), test=split == "test")
        if query is None:
            skipped += 1
            continue
        prediction = predictor.predict(sample.scene.image, query.text)
        masks, keywords = prediction_instances(prediction, mode, min_area)
        found = len(masks)
        truth = np.zeros(prediction.mask.shape, bool)
        for category in query.targets:
            truth |= sample.scene.mask(category).astype(bool)
        if mode == "categories":  # what the instances cover together (the answer's mask is the first)
            union = np.logical_or.reduce(masks) if masks else np.zeros_like(truth)
        else:
            union = prediction.mask
        ious.append(mask_iou(union, truth))
        if mode == "categories":
            same_set.append(set(keywords) == set(query.targets))
            single = predictor.predict(sample.scene.image, sample.queries[0].text)
            single_one.append(len(prediction_instances(single, mode, min_area)[0]) == 1)
        right.append(found == len(query.targets))
        errors.append(found - len(query.targets))
        counts[f"{len(query.targets)} asked, {found} found"] += 1
    if not right:
        raise ValueError(f"none of scenes 0-{scenes - 1} of {split} holds two objects of one kind")
    extra = {} if mode != "categories" else {
        "categories_right": float(np.mean(same_set)), "single_target_queries": len(single_one),
        "single_target_one_instance": float(np.mean(single_one))}
    return {"measured_on": f"generated {split}, seed {seed}, scenes 0-{scenes - 1}", "queries": len(right),
            "skipped_scenes": skipped, "min_instance_area": min_area, "mode": mode, **extra,
            "count_accuracy": float(np.mean(right)), "mean_count_error": float(np.mean(errors)),
            "mean_abs_count_error": float(np.mean(np.abs(errors))), "union_miou": float(np.mean(ious)),
            "target": {"count_accuracy": 0.9}, "outcomes": dict(counts.most_common())}
