"""Generated "all the <kind>" training samples (not in the paper, whose data has one target per query).

The answer to "all the fruit" is every fruit in view: the mask is their union and [KEY]'s keyword is the
kind ("fruit"). The prompt anchors (anchors.py) get every member's category, so a codebook fusion learns
to spread its belief over them, which is what the category gate splits into one instance each
(inference/category_gate.py). Without such samples the belief of a plural query sits on one member.

Item i is a pure function of (seed, split, i): scene i * TRIES + t for the first t whose objects
include two or more of one kind, so a resumed run reads the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keyseg_core.data.sample import SegSample
from keyseg_core.scenes.eval_queries import ALL_TEMPLATES, multi_instance_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

SOURCE_NAME = "scenes-all"  # DataSource.name of this source
TRIES = 32  # scenes looked at per item; about two in three hold two objects of a kind


@dataclass
class KindSample(SegSample):
    """A SegSample about several objects: `targets` are their categories (the anchors' soft target)."""

    targets: tuple[str, ...] = ()


class KindScenes:
    """Map-style data set of `length` generated "all the <kind>" samples of a train or val split."""

    def __init__(self, split: str = "train", length: int = 20000, seed: int = 11, queries: int = 2) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split: '{split}' must be train or val (the test split's phrasings are held out)")
        for name, value in (("length", length), ("queries", queries)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"options.{name}: {value!r} must be an integer >= 1")
        if queries > len(ALL_TEMPLATES):
            raise ValueError(f"options.queries: {queries} is more than the {len(ALL_TEMPLATES)} templates")
        self.split, self.length, self.seed, self.queries = split, length, int(seed), queries
        self.kb, self.config = load_knowledge(), SceneConfig()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> KindSample:
        if not 0 <= index < self.length:
            raise IndexError(f"{SOURCE_NAME}: index {index} outside 0-{self.length - 1}")
        for t in range(TRIES):
            scene_index = index * TRIES + t
            sample = make_sample(self.seed, self.split, scene_index, self.config, self.kb)
            rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], scene_index, 0xA11])
            asked = [multi_instance_query(sample.scene.objects, self.kb, rng, test=False) for _ in range(self.queries)]
            if asked[0] is None:
                continue
            query = asked[0]
            mask = np.zeros(sample.scene.labels.shape, np.uint8)
            for category in query.targets:
                mask |= sample.scene.mask(category)
            texts = [q.text for q in asked if q.kind == query.kind] or [query.text]
            return KindSample(
                id=f"{SOURCE_NAME}-{self.split}-{self.seed}-{index}", source=SOURCE_NAME, image=sample.scene.image,
                mask=mask, queries=list(dict.fromkeys(texts)), is_sentence=False,
                keyword=query.kind, query_type="all", targets=query.targets)
        raise ValueError(f"{SOURCE_NAME}: none of scenes {index * TRIES}-{index * TRIES + TRIES - 1} of "
                         f"{self.split} (seed {self.seed}) holds two objects of one kind")
