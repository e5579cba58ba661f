"""Depth images with a known answer, for generated scenes (tests, the ROS demo, the image player).

Every instance of a scene's label image is a fronto-parallel plane: the background at 3 m, object
k at 1 + 0.25 k m. So an instance's true 3D centroid is analytic: its pixels' mean back-projected
at its plane's depth. A small fraction of pixels are holes (0 and NaN), as real depth cameras have.
"""

from __future__ import annotations

import numpy as np

from keyseg_core.inference.geometry import Intrinsics

BACKGROUND_M = 3.0
FIRST_M = 1.0
STEP_M = 0.25


def plane_depth(labels: np.ndarray, *, rng: np.random.Generator | None = None,
                holes: float = 0.0) -> np.ndarray:
    """float32 metres for a label image (0 background, k + 1 = object k); `holes` of the pixels
    (a fraction) get no reading, half as 0 and half as NaN."""
    depth = np.where(labels == 0, BACKGROUND_M, FIRST_M + STEP_M * (labels.astype(np.float32) - 1))
    depth = depth.astype(np.float32)
    if holes > 0:
        rng = rng or np.random.default_rng(0)
        hit = rng.random(depth.shape)
        depth[hit < holes / 2] = 0.0
        depth[(hit >= holes / 2) & (hit < holes)] = np.nan
    return depth


def object_depth(index: int) -> float:
    """The plane depth of object `index` (label index + 1), in metres."""
    return FIRST_M + STEP_M * index


def to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """uint16 millimetres (16UC1) of float metres; NaN and out-of-range readings become 0."""
    mm = np.nan_to_num(depth_m, nan=0.0, posinf=0.0, neginf=0.0) * 1000.0
    return np.where((mm > 0) & (mm < 65535.5), np.round(mm), 0).astype(np.uint16)


def analytic_centroid(mask: np.ndarray, depth_m: float, k: Intrinsics) -> np.ndarray:
    """The centroid of a fronto-parallel planar patch: its pixels' mean back-projected at depth_m."""
    v, u = np.nonzero(mask)
    return np.array([(u.mean() - k.cx) * depth_m / k.fx, (v.mean() - k.cy) * depth_m / k.fy, depth_m])
