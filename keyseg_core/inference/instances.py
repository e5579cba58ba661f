"""Instances of one answer: the mask whole, or each connected component of it.

A query's answer is one mask today; a scene may hold two cups, and a model that returns instance
masks will give a list directly. Everything downstream (detections, 3D, track ids) takes a list
of instance masks, so both fit.
"""

from __future__ import annotations

import cv2
import numpy as np

MODES = ("mask", "components")


def split_instances(mask: np.ndarray, mode: str = "mask", min_area: int = 1) -> list[np.ndarray]:
    """HxW bool instance masks, largest first; none for an empty mask.

    mode "mask": the whole mask is one instance. "components": one instance per 8-connected
    component of at least `min_area` pixels (smaller specks are dropped)."""
    if mode not in MODES:
        raise ValueError(f"instance mode {mode!r}: must be one of {', '.join(MODES)}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    if mode == "mask":
        return [mask] if mask.sum() >= min_area else []
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    order = [int(i) + 1 for i in np.argsort(-areas, kind="stable") if areas[i] >= min_area]
    return [labels == i for i in order]
