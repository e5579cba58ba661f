"""Scenes from explicit layouts: glyphs pasted in z order with binary alpha, so every pixel belongs to
the topmost object covering it (or the background) and instance masks are exactly the visible pixels.

A random layout is searched for (distinct categories, sizes, rotations, flips, positions) until every
object keeps at least MIN_VISIBLE of its own drawn pixels; the video module moves the same layouts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from keyseg_core.scenes.knowledge import Knowledge
from keyseg_core.scenes.render import Patch, place

MIN_VISIBLE = 0.6  # each object keeps >= 60 % of its own drawn pixels
BASE_SIZE = (320, 240)  # glyph sizes below are for this image size and scale with it
GLYPH_SIZE = (48.0, 130.0)  # longest side of a glyph's ink, px
MAX_ANGLE = 15.0  # degrees
MAX_OBJECTS = 12  # labels are uint8 with 0 = background


@dataclass(frozen=True)
class PlacedObject:
    """One object of an explicit layout; list order is z order (last is on top)."""

    category: str
    cx: float
    cy: float
    size: float  # longest side of the ink, px (before rotation)
    angle: float = 0.0  # degrees, counter-clockwise
    flip: bool = False  # mirrored left-right
    raster_size: int | None = None  # pin the cached raster (video); None = nearest bucket


@dataclass(frozen=True)
class ObjectInfo:
    """What queries reason over: visible pixels only (bbox x1/y1 exclusive)."""

    category: str
    bbox: tuple[int, int, int, int]
    visible: int
    drawn: int

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2.0, (y0 + y1) / 2.0

    def to_json(self) -> dict:
        return {"category": self.category, "bbox": list(self.bbox), "visible": self.visible, "drawn": self.drawn}


@dataclass
class Scene:
    image: np.ndarray  # HxWx3 uint8
    labels: np.ndarray  # HxW uint8: 0 background, i + 1 = object i
    objects: list[ObjectInfo]
    layout: list[PlacedObject]

    def mask(self, category: str) -> np.ndarray:
        """Visible pixels of one object, HxW uint8 0/1."""
        index = [o.category for o in self.objects].index(category)
        return (self.labels == index + 1).astype(np.uint8)


def glyph_size_range(width: int, height: int) -> tuple[float, float]:
    """GLYPH_SIZE scaled with the image (by the smaller of the two axis ratios)."""
    s = min(width / BASE_SIZE[0], height / BASE_SIZE[1])
    return GLYPH_SIZE[0] * s, GLYPH_SIZE[1] * s


def patch_of(obj: PlacedObject, kb: Knowledge) -> Patch:
    return place(kb.category(obj.category).codepoint, obj.size, obj.angle, obj.flip, obj.cx, obj.cy, obj.raster_size)


def _clip(patch: Patch, width: int, height: int) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Image slices and the patch's matching rgb/mask views, clipped to the image."""
    h, w = patch.shape
    x0, y0 = max(patch.x0, 0), max(patch.y0, 0)
    x1, y1 = min(patch.x0 + w, width), min(patch.y0 + h, height)
    if x0 >= x1 or y0 >= y1:
        return None
    px, py = x0 - patch.x0, y0 - patch.y0
    rows, cols = slice(py, py + y1 - y0), slice(px, px + x1 - x0)
    return slice(y0, y1), slice(x0, x1), patch.rgb[rows, cols], patch.mask[rows, cols]


def paint(background: np.ndarray, patches: Sequence[Patch]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(image, labels, drawn pixel counts inside the image) for patches in z order."""
    height, width = background.shape[:2]
    if len(patches) > MAX_OBJECTS:
        raise ValueError(f"at most {MAX_OBJECTS} objects per scene")
    image = background.copy()
    labels = np.zeros((height, width), np.uint8)
    drawn = []
    for i, patch in enumerate(patches):
        clipped = _clip(patch, width, height)
        if clipped is None:
            drawn.append(0)
            continue
        rows, cols, rgb, mask = clipped
        np.copyto(image[rows, cols], rgb, where=mask[..., None])
        np.copyto(labels[rows, cols], np.uint8(i + 1), where=mask)
        drawn.append(int(np.count_nonzero(mask)))
    return image, labels, drawn


def paint_labels(shape: tuple[int, int], patches: Sequence[Patch]) -> tuple[np.ndarray, list[int]]:
    """paint() without colours: the layout search only needs labels and drawn counts."""
    labels = np.zeros(shape, np.uint8)
    drawn = []
    for i, patch in enumerate(patches):
        clipped = _clip(patch, shape[1], shape[0])
        if clipped is None:
            drawn.append(0)
            continue
        rows, cols, _, mask = clipped
        np.copyto(labels[rows, cols], np.uint8(i + 1), where=mask)
        drawn.append(int(np.count_nonzero(mask)))
    return labels, drawn


def object_infos(labels: np.ndarray, categories: Sequence[str], drawn: Sequence[int]) -> list[ObjectInfo]:
    counts = np.bincount(labels.ravel(), minlength=len(categories) + 1)
    infos = []
    for i, category in enumerate(categories):
        visible = int(counts[i + 1])
        bbox = (0, 0, 0, 0)
        if visible:
            own = labels == i + 1
            rows, cols = np.flatnonzero(own.any(axis=1)), np.flatnonzero(own.any(axis=0))
            bbox = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
        infos.append(ObjectInfo(category, bbox, visible, int(drawn[i])))
    return infos


def render_scene(
    background: np.ndarray, layout: Sequence[PlacedObject], kb: Knowledge, patches: Sequence[Patch] | None = None
) -> Scene:
    """The scene for an explicit layout (the single place where pixels and labels are made).
    `patches` may pass the layout's already warped glyphs (search_layout returns them)."""
    if patches is None:
        patches = [patch_of(o, kb) for o in layout]
    image, labels, drawn = paint(background, patches)
    return Scene(image, labels, object_infos(labels, [o.category for o in layout], drawn), list(layout))


def visible_fractions(scene: Scene) -> list[float]:
    return [o.visible / o.drawn if o.drawn else 0.0 for o in scene.objects]


def _shifted(patch: Patch, dx: int, dy: int) -> Patch:
    return Patch(patch.x0 + dx, patch.y0 + dy, patch.rgb, patch.mask)


def _fits(patch: Patch, width: int, height: int) -> bool:
    return patch.shape[1] <= width and patch.shape[0] <= height


def sample_layout(
    rng: np.random.Generator,
    categories: Sequence[str],
    width: int,
    height: int,
    kb: Knowledge,
    *,
    attempts: int = 60,
) -> list[PlacedObject]:
    """search_layout() without the patches."""
    return search_layout(rng, categories, width, height, kb, attempts=attempts)[0]


def search_layout(
    rng: np.random.Generator,
    categories: Sequence[str],
    width: int,
    height: int,
    kb: Knowledge,
    *,
    attempts: int = 60,
) -> tuple[list[PlacedObject], list[Patch]]:
    """Random layout of the given (distinct) categories, every glyph fully inside the image and every
    object >= MIN_VISIBLE visible. Glyphs are warped once at integer centres and then only shifted,
    so each position attempt costs one label painting. Sizes shrink by 15 % after every 15 failed
    attempts (never below the minimum); a ValueError says when no layout was found. Returns the
    layout and its placed patches (identical to patch_of() at the final integer centres)."""
    if len(set(categories)) != len(categories):
        raise ValueError("scene categories must be distinct")
    lo, hi = glyph_size_range(width, height)
    objects = [
        PlacedObject(
            c, 0.0, 0.0, float(rng.uniform(lo, hi)), float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)), bool(rng.random() < 0.5)
        )
        for c in categories
    ]
    base: list[Patch] = []
    for attempt in range(attempts):
        if attempt and attempt % 15 == 0:
            objects = [replace(o, size=max(lo, o.size * 0.85)) for o in objects]
            base = []
        if not base:
            base = [patch_of(o, kb) for o in objects]  # centred at (0, 0)
        if not all(_fits(p, width, height) for p in base):
            objects = [replace(o, size=max(lo * 0.5, o.size * 0.85)) for o in objects]
            base = []
            continue
        # centre offsets keeping each patch inside the image
        centres = [
            (
                int(rng.integers(-p.x0, width - p.shape[1] - p.x0 + 1)),
                int(rng.integers(-p.y0, height - p.shape[0] - p.y0 + 1)),
            )
            for p in base
        ]
        placed = [_shifted(p, dx, dy) for p, (dx, dy) in zip(base, centres)]
        labels, drawn = paint_labels((height, width), placed)
        counts = np.bincount(labels.ravel(), minlength=len(objects) + 1)[1:]
        if all(d > 0 and v >= MIN_VISIBLE * d for v, d in zip(counts, drawn)):
            return [replace(o, cx=float(dx), cy=float(dy)) for o, (dx, dy) in zip(objects, centres)], placed
    raise ValueError(f"no layout with every object >= {MIN_VISIBLE:.0%} visible after {attempts} attempts")
