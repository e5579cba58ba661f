"""Instances of one answer: the mask whole, each connected component of it, or each category.

A query's answer is one mask; "all the fruit" asks for several objects. With a category gate
(`keyseg_core.inference.category_gate`) and an instance share, the predictor gives each category in
view that holds that share of the model's belief its own mask (`Prediction.instances`): mode
"categories". Everything downstream (detections, 3D, track ids) takes a list of instance masks.
"""

from __future__ import annotations

import cv2
import numpy as np

from keyseg_core.inference.results import Prediction

MODES = ("mask", "components", "categories")


def split_instances(mask: np.ndarray, mode: str = "mask", min_area: int = 1) -> list[np.ndarray]:
    """HxW bool instance masks, largest first; none for an empty mask.

    mode "mask": the whole mask is one instance. "components": one instance per 8-connected
    component of at least `min_area` pixels (smaller specks are dropped). ("categories" needs the
    prediction: `prediction_instances`.)"""
    if mode not in MODES[:2]:
        raise ValueError(f"instance mode {mode!r}: must be one of {', '.join(MODES[:2])} for one mask")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    if mode == "mask":
        return [mask] if mask.sum() >= min_area else []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area]
    return [labels == i for i in order]


def prediction_instances(prediction: Prediction, mode: str = "mask", min_area: int = 1
                         ) -> tuple[list[np.ndarray], list[str]]:
    """(instance masks, the keyword of each) of a prediction, largest or best first.

    mode "categories": the prediction's category instances of at least `min_area` pixels (the whole
    mask under its keyword when it has none: a model without a gate, or no instance share set);
    "mask" and "components" as `split_instances`, every instance under the prediction's keyword."""
    if mode == "categories" and prediction.instances:
        kept = [(i.mask, i.keyword) for i in prediction.instances if i.mask.sum() >= min_area]
        return [m for m, _ in kept], [k for _, k in kept]
    masks = split_instances(prediction.mask, "mask" if mode == "categories" else mode, min_area)
    return masks, [prediction.keyword] * len(masks)
