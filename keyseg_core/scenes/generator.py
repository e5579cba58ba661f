"""One synthetic reasoning-segmentation sample from (seed, split, index).

Each sample draws from its own RNG, seeded by (seed, split, index): samples are independent of
each other, of worker count and of --n, so a run with --n 100 is a prefix of one with --n 1000,
and val (a different split id) is a fresh seed stream with train's distributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from keyseg_core.scenes.backgrounds import sample_background
from keyseg_core.scenes.compose import MIN_VISIBLE, Scene, render_scene, search_layout, visible_fractions
from keyseg_core.scenes.knowledge import Knowledge, load_knowledge
from keyseg_core.scenes.queries import DEFAULT_WEIGHTS, Query, make_queries

GENERATOR_VERSION = "keyseg-scenes/1"
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
STREAM_IDS = {"image": 0, "video": 1}


@dataclass(frozen=True)
class SceneConfig:
    width: int = 320
    height: int = 240
    min_objects: int = 3
    max_objects: int = 6
    categories: tuple[str, ...] | None = None  # None = every category in the table
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def pool(self, kb: Knowledge) -> tuple[str, ...]:
        return tuple(self.categories) if self.categories else tuple(kb.categories)


@dataclass
class Sample:
    split: str
    index: int
    seed: int
    scene: Scene
    background: str
    queries: list[Query]

    @property
    def keyword(self) -> str:
        return self.queries[0].spec.target

    @property
    def target_mask(self) -> np.ndarray:
        """HxW uint8 0/1: the target's visible pixels."""
        return self.scene.mask(self.keyword)

    @property
    def stem(self) -> str:
        return f"{self.split}_{self.index:06d}"


def sample_rng(seed: int, split: str, index: int, stream: str = "image") -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be >= 0")
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], STREAM_IDS[stream], index]))


SAME_KIND_PROBABILITY = 0.35  # scenes seeded with two objects of one kind, so size queries have material


def choose_categories(
    rng: np.random.Generator, pool: Sequence[str], low: int, high: int, kb: Knowledge | None = None
) -> list[str]:
    """n distinct categories, no two in conflict; with SAME_KIND_PROBABILITY two share a kind (given kb).
    May return fewer than n only when conflicts leave too few categories."""
    n = int(rng.integers(low, min(high, len(pool)) + 1))
    ok = kb.compatible if kb is not None else (lambda c, others: True)
    chosen: list[str] = []
    if kb is not None and n >= 2 and rng.random() < SAME_KIND_PROBABILITY:
        groups = [[c for c in pool if kb.has_kind(c, k)] for k in kb.kinds]
        groups = [g for g in groups if len(g) >= 2]
        if groups:
            group = groups[int(rng.integers(len(groups)))]
            for i in rng.permutation(len(group)):
                if len(chosen) < 2 and ok(group[i], chosen):
                    chosen.append(group[i])
    rest = [c for c in pool if c not in chosen]
    for i in rng.permutation(len(rest)):
        if len(chosen) == n:
            break
        if ok(rest[i], chosen):
            chosen.append(rest[i])
    return [chosen[i] for i in rng.permutation(len(chosen))]  # z order independent of the pairing


def make_sample(
    seed: int, split: str, index: int, config: SceneConfig = SceneConfig(), kb: Knowledge | None = None
) -> Sample:
    """Background, layout, scene and three queries for one index; retries layouts that fail."""
    kb = kb or load_knowledge()
    rng = sample_rng(seed, split, index)
    background_name, background = sample_background(rng, split, config.width, config.height)
    for _ in range(20):
        categories = choose_categories(rng, config.pool(kb), config.min_objects, config.max_objects, kb)
        if len(categories) < config.min_objects:
            continue
        try:
            layout, patches = search_layout(rng, categories, config.width, config.height, kb)
        except ValueError:
            continue
        scene = render_scene(background, layout, kb, patches)
        if min(visible_fractions(scene)) >= MIN_VISIBLE:
            break
    else:
        raise RuntimeError(
            f"{split} {index}: no valid scene after 20 tries: the image is too small for "
            f"{config.min_objects}+ objects, or too few categories can share a scene (see conflicts)"
        )
    queries = make_queries(scene.objects, kb, rng, test=split == "test", weights=config.weights)
    return Sample(split, index, seed, scene, background_name, queries)
