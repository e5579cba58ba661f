"""Moving scenes for the streaming benchmark and the live demo.

The objects of one generated layout drift linearly (bouncing off the image border) and breathe in
scale over a fixed background; every frame is rendered by compose.render_scene from its explicit
layout, so frame masks are as exact as still ones. The queries are chosen on the first frame and
kept only if they single out the target, which stays >= 60 % visible, in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from keyseg_core.scenes.backgrounds import sample_background
from keyseg_core.scenes.compose import (
    MIN_VISIBLE,
    ObjectInfo,
    PlacedObject,
    Scene,
    patch_of,
    render_scene,
    sample_layout,
)
from keyseg_core.scenes.generator import choose_categories, sample_rng
from keyseg_core.scenes.knowledge import Knowledge, load_knowledge
from keyseg_core.scenes.queries import DEFAULT_WEIGHTS, Query, is_valid, make_queries
from keyseg_core.scenes.render import bucket

STATIC_TYPES = ("name", "use", "property", "kind")  # meaning does not depend on positions


@dataclass
class VideoSequence:
    frames: list[np.ndarray]  # HxWx3 uint8
    masks: list[np.ndarray]  # HxW uint8 0/1: the target's visible pixels in each frame
    queries: list[Query]
    background: str
    layouts: list[list[PlacedObject]]
    objects: list[list[ObjectInfo]]

    @property
    def texts(self) -> list[str]:
        return [q.text for q in self.queries]

    @property
    def keyword(self) -> str:
        return self.queries[0].spec.target

    @property
    def query_type(self) -> str:
        return self.queries[0].spec.type

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True)
class _Motion:
    vx: float
    vy: float
    amp: float  # relative scale change
    period: float  # frames
    phase: float
    half_w: float  # half extent of the glyph patch at scale 1 (bounce margin)
    half_h: float


def _motions(rng: np.random.Generator, layout: list[PlacedObject], kb: Knowledge, speed: float) -> list[_Motion]:
    out = []
    for obj in layout:
        p = patch_of(replace(obj, cx=0.0, cy=0.0), kb)
        half_w = max(-p.x0, p.x0 + p.shape[1])
        half_h = max(-p.y0, p.y0 + p.shape[0])
        angle = rng.uniform(0, 2 * np.pi)
        v = rng.uniform(0.3, 1.0) * speed
        amp = rng.uniform(0.03, 0.1)
        period, phase = rng.uniform(30, 90), rng.uniform(0, 2 * np.pi)
        out.append(_Motion(v * np.cos(angle), v * np.sin(angle), amp, period, phase, half_w, half_h))
    return out


def _bounce(x: float, lo: float, hi: float) -> float:
    """Position of a point moving freely from inside [lo, hi], reflected at both ends."""
    if hi <= lo:
        return (lo + hi) / 2.0
    span = hi - lo
    t = (x - lo) % (2 * span)
    return lo + (t if t <= span else 2 * span - t)


def _layout_at(
    t: int, start: list[PlacedObject], motions: list[_Motion], width: int, height: int
) -> list[PlacedObject]:
    """Closed form (no drift from integrating): linear motion folded back at the borders."""
    frame = []
    for obj, m in zip(start, motions):
        s = 1.0 + m.amp * np.sin(2 * np.pi * t / m.period + m.phase)
        grow = 1.0 + m.amp  # margins for the largest scale, so glyphs never leave the image
        cx = _bounce(obj.cx + m.vx * t, m.half_w * grow, width - m.half_w * grow)
        cy = _bounce(obj.cy + m.vy * t, m.half_h * grow, height - m.half_h * grow)
        frame.append(replace(obj, cx=float(cx), cy=float(cy), size=float(obj.size * s)))
    return frame


def _frame_ok(scene: Scene, queries: list[Query], target: str, kb: Knowledge) -> bool:
    info = next(o for o in scene.objects if o.category == target)
    if info.drawn == 0 or info.visible < MIN_VISIBLE * info.drawn:
        return False
    return all(is_valid(q.spec, scene.objects, kb) for q in queries)


def generate_sequence(
    n_frames: int,
    seed: int,
    split: str = "test",
    size: tuple[int, int] = (320, 240),
    *,
    objects: tuple[int, int] = (3, 5),
    categories: tuple[str, ...] | None = None,
    weights: dict[str, float] | None = None,
    speed: float = 2.0,
    attempts: int = 40,
    kb: Knowledge | None = None,
) -> VideoSequence:
    """A reproducible moving scene (same arguments, same frames) with one target and 3 queries.

    speed: the fastest drift in px/frame at 320x240 (scaled with the image). Position-dependent
    queries (spatial, size) are tried first as weighted; after half the attempts only static types
    are asked, and the target is raised to the top of the z order so it stays visible."""
    if n_frames <= 0:
        raise ValueError("n_frames must be > 0")
    kb = kb or load_knowledge()
    width, height = size
    rng = sample_rng(seed, split, 0, stream="video")
    background_name, background = sample_background(rng, split, width, height)
    pool = tuple(categories) if categories else tuple(kb.categories)
    weights = dict(weights or DEFAULT_WEIGHTS)
    scale = min(width / 320, height / 240)
    for attempt in range(attempts):
        late = attempt >= attempts // 2
        chosen = choose_categories(rng, pool, *objects, kb)
        try:
            layout = sample_layout(rng, chosen, width, height, kb)
        except ValueError:
            continue
        layout = [replace(o, raster_size=bucket(o.size)) for o in layout]  # one raster per object: no flicker
        first = render_scene(background, layout, kb)
        w = {t: (v if t in STATIC_TYPES or not late else 0.0) for t, v in weights.items()}
        queries = make_queries(first.objects, kb, rng, test=split == "test", weights=w)
        target = queries[0].spec.target
        if late:  # the target on top cannot be hidden
            layout = [o for o in layout if o.category != target] + [o for o in layout if o.category == target]
        motions = _motions(rng, layout, kb, speed * scale)
        layouts, scenes = [], []
        for t in range(n_frames):
            layouts.append(_layout_at(t, layout, motions, width, height))
            scenes.append(render_scene(background, layouts[-1], kb))
            if not _frame_ok(scenes[-1], queries, target, kb):
                break
        else:
            return VideoSequence(
                frames=[s.image for s in scenes],
                masks=[s.mask(target) for s in scenes],
                queries=queries,
                background=background_name,
                layouts=layouts,
                objects=[s.objects for s in scenes],
            )
    raise RuntimeError(f"no valid moving scene after {attempts} attempts (try fewer frames or objects)")
