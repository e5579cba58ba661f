"""ReasonSeg's labelme shapes -> mask, exactly as LISA's `get_mask_from_json` rasterises them.

LISA's rules (facts in docs/data.md): 'flag' labels are skipped, labels containing 'ignore' paint
255, any other label paints 1; each polygon is drawn with cv2 (`polylines`, closed, 1 px, then
`fillPoly`, both 8-connected) from its points cast to int32; polygons are painted in the order of
`np.argsort(areas)[::-1]`, i.e. largest first, so a small ignore polygon inside a target punches a
255 hole. Drawing with cv2 itself (not PIL) makes every pixel, and so every gIoU/cIoU, LISA's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from keyseg_core.config.labels import IGNORE_PIXEL
from keyseg_core.data.errors import DatasetError


@dataclass(frozen=True)
class Shape:
    label: str
    points: tuple[tuple[float, float], ...]  # (x, y) = (column, row) as in the JSON

    @property
    def value(self) -> int:
        return IGNORE_PIXEL if "ignore" in self.label.lower() else 1

    def polygon(self) -> np.ndarray:
        """(1, N, 2) int32, the array LISA hands to cv2 (casting truncates toward zero)."""
        return np.array([self.points], dtype=np.int32)


def parse_shapes(raw: object, path: Path, record: object) -> list[Shape]:
    """Validate the JSON `shapes` list; refuse shapes the drawing code cannot draw."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise DatasetError(path, record, "bad_shapes", "'shapes' is not a list")
    shapes = []
    for i, item in enumerate(raw):
        where = f"{record} shape {i}"
        if not isinstance(item, dict):
            raise DatasetError(path, where, "bad_shapes", "shape is not an object")
        label = str(item.get("label", ""))
        if label.lower() == "flag":  # deprecated annotations, meaningless
            continue
        points = item.get("points")
        if not points:
            raise DatasetError(path, where, "no_points", f"shape '{label}' has no points")
        try:
            pts = tuple((float(p[0]), float(p[1])) for p in points)
        except (TypeError, ValueError, IndexError) as exc:
            raise DatasetError(path, where, "bad_points", f"points are not [x, y] pairs: {exc}") from exc
        if not all(abs(c) < 2**31 for xy in pts for c in xy):
            raise DatasetError(path, where, "bad_points", "a coordinate is not finite or does not fit int32")
        shapes.append(Shape(label, pts))
    return shapes


def _paint(canvas: np.ndarray, shape: Shape, value: int) -> None:
    """Outline then fill, in place: what LISA does for the area and for the mask."""
    polygon = shape.polygon()
    cv2.polylines(canvas, polygon, True, value, 1)
    cv2.fillPoly(canvas, polygon, value)


def shapes_to_mask(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    """HxW uint8 mask with 0/1/255; largest polygon (by its drawn pixel count) painted first."""
    areas = []
    for shape in shapes:
        canvas = np.zeros((height, width), dtype=np.uint8)
        _paint(canvas, shape, 1)
        areas.append(canvas.sum())
    mask = np.zeros((height, width), dtype=np.uint8)
    for i in np.argsort(areas)[::-1]:  # LISA's order, ties included
        _paint(mask, shapes[int(i)], shapes[int(i)].value)
    return mask
