"""COCO `segmentation` fields -> binary masks through pycocotools, with the pitfalls handled:
a 4-number polygon (2 points) would be read as a box, RLE `counts` may be a str, and parts of
one object are merged as a union so overlaps stay 1."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_api

from keyseg_core.data.errors import DatasetError


def _polygon_parts(seg: list, path: Path, record: object) -> list[list[float]]:
    parts = []
    for i, part in enumerate(seg):
        if not isinstance(part, list) or not all(isinstance(v, (int, float)) for v in part):
            raise DatasetError(path, record, "bad_polygon", f"polygon part {i} is not a flat list of numbers")
        if len(part) % 2 or len(part) < 4:
            raise DatasetError(
                path, record, "bad_polygon", f"polygon part {i} has {len(part)} numbers; needs an even count >= 4"
            )
        # 2 points: repeat the last one so pycocotools rasterises a (zero-area) polygon, not a box
        parts.append([float(v) for v in part] + ([float(part[-2]), float(part[-1])] if len(part) == 4 else []))
    return parts


def segmentation_to_rle(seg: object, height: int, width: int, path: Path, record: object) -> dict:
    """One merged RLE for an annotation's segmentation (polygons or RLE)."""
    if isinstance(seg, list):
        if not seg:
            raise DatasetError(path, record, "empty_segmentation", "segmentation has no polygon")
        return mask_api.merge(mask_api.frPyObjects(_polygon_parts(seg, path, record), height, width))
    if isinstance(seg, dict) and "counts" in seg and "size" in seg:
        if list(seg["size"]) != [height, width]:
            raise DatasetError(
                path, record, "rle_size_mismatch", f"RLE size {seg['size']} != image size {[height, width]}"
            )
        counts = seg["counts"]
        if isinstance(counts, list):
            return mask_api.frPyObjects(seg, height, width)
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise DatasetError(path, record, "bad_rle", "RLE counts must be a list, str or bytes")
        return {"size": [height, width], "counts": counts}
    raise DatasetError(path, record, "bad_segmentation", "segmentation is neither polygons nor RLE")


def rle_area(rle: dict) -> int:
    """Pixel count without decoding."""
    return int(mask_api.area(rle))


def decode_rle(rle: dict) -> np.ndarray:
    """HxW uint8 with 0/1."""
    with warnings.catch_warnings():  # pycocotools' own numpy-2 copy= deprecation, not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_api.decode(rle).astype(np.uint8)


def union_rles(rles: list[dict]) -> dict:
    return mask_api.merge(rles) if len(rles) > 1 else rles[0]
