"""ReasonSeg's labelme shapes -> mask, by LISA's rules (facts in docs/data.md):
'flag' labels skipped, 'ignore' labels paint 255, any other label paints 1; each polygon is
filled together with its 1-px outline; larger polygons are painted first so a small ignore
polygon inside a target punches a 255 hole."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from keyseg_core.data.errors import DatasetError
from keyseg_core.data.sample import IGNORE_INDEX


@dataclass(frozen=True)
class Shape:
    label: str
    points: tuple[tuple[int, int], ...]  # (x, y) = (column, row), truncated to int like LISA

    @property
    def value(self) -> int:
        return IGNORE_INDEX if "ignore" in self.label.lower() else 1


def parse_shapes(raw: object, path: Path, record: object) -> list[Shape]:
    """Validate the JSON `shapes` list; refuse shapes the drawing code cannot fill."""
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
            pts = tuple((int(float(p[0])), int(float(p[1]))) for p in points)
        except (TypeError, ValueError, IndexError) as exc:
            raise DatasetError(path, where, "bad_points", f"points are not [x, y] pairs: {exc}") from exc
        if len(pts) < 3:
            raise DatasetError(path, where, "few_points", f"polygon '{label}' has {len(pts)} point(s), needs 3")
        shapes.append(Shape(label, pts))
    return shapes


def _draw(shape: Shape, height: int, width: int, value: int) -> Image.Image:
    canvas = Image.new("L", (width, height), 0)
    # fill + outline = cv2.fillPoly + cv2.polylines(thickness=1); points outside are clipped
    ImageDraw.Draw(canvas).polygon(shape.points, fill=value, outline=value)
    return canvas


def shapes_to_mask(shapes: list[Shape], height: int, width: int) -> np.ndarray:
    """HxW uint8 mask with 0/1/255; polygons painted in descending order of their pixel area."""
    layers = [np.asarray(_draw(s, height, width, 1), dtype=bool) for s in shapes]
    order = sorted(range(len(shapes)), key=lambda i: -int(layers[i].sum()))  # stable on ties
    mask = np.zeros((height, width), dtype=np.uint8)
    for i in order:
        mask[layers[i]] = shapes[i].value
    return mask
