"""The demo's scenes: one generated scene per query, query types in turn, as the camera plays them.

Scenes come from keyseg_core.scenes' test split (held-out backgrounds and phrasings): one query type
after another (use, property, spatial, kind, size, name, ...), each with the scene's exact target
mask and keyword. A scene's frames carry a frame_id that names it, so a result can be matched to
its scene.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QUERY_TYPE_ORDER = ("use", "property", "spatial", "kind", "size", "name")
SPLIT = "test"  # held-out backgrounds and phrasings: what the model never saw in training
SCENE_SIZE = (320, 240)
JPEG_QUALITY = 92  # as `keyseg generate` writes its scenes
SAMPLE_SEARCH = 400  # generated scenes searched for a query of the wanted type
FRAME_PREFIX = "keyseg_demo_scene_"


@dataclass
class Item:
    """One query of the demo: its scene (as the camera plays it), target mask and keyword."""

    index: int  # 1-based
    qtype: str
    query: str
    expected: str
    sample: int  # index of the scene in the generated split
    background: str
    image: np.ndarray  # HxWx3 uint8, the decoded JPEG the camera publishes
    target: np.ndarray  # HxW uint8 0/1
    scene_path: Path
    results: list = field(default_factory=list)  # (arrival time, SegmentationResult), in order
    query_sent: float = 0.0

    @property
    def frame_id(self) -> str:
        """The camera's frame_id while it plays this scene."""
        return f"{FRAME_PREFIX}{self.index:02d}"

    @property
    def stem(self) -> str:
        """File name stem of this query's outputs."""
        return f"q{self.index:02d}_{self.qtype}"


def make_items(n: int, seed: int, scene_dir: Path, check: Callable[[], None] = lambda: None) -> list[Item]:
    """n scenes of the test split with one query each, query types in QUERY_TYPE_ORDER, different
    targets where the split allows; each scene written as the JPEG the camera plays. `check` is
    called before each scene is generated (StopFlag.check: a stop request ends the search)."""
    from PIL import Image as PILImage

    from keyseg_core.scenes import SceneConfig, load_knowledge, make_sample

    kb = load_knowledge()
    config = SceneConfig(width=SCENE_SIZE[0], height=SCENE_SIZE[1])
    cache: dict = {}

    def sample(i: int):
        if i not in cache:
            check()
            cache[i] = make_sample(seed, SPLIT, i, config, kb)
        return cache[i]

    scene_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    used_samples: set[int] = set()
    used_targets: set[str] = set()
    for k in range(n):
        want = QUERY_TYPE_ORDER[k % len(QUERY_TYPE_ORDER)]
        chosen = None
        for fresh_target in (True, False):
            for i in range(SAMPLE_SEARCH):
                if i in used_samples:
                    continue
                s = sample(i)
                if fresh_target and s.keyword in used_targets:
                    continue
                query = next((q for q in s.queries if q.spec.type == want), None)
                if query is not None:
                    chosen = (i, s, query)
                    break
            if chosen:
                break
        if chosen is None:  # the type is too rare for this seed: any unused scene's first query
            i = next(i for i in range(SAMPLE_SEARCH * 2) if i not in used_samples)
            chosen = (i, sample(i), sample(i).queries[0])
        i, s, query = chosen
        used_samples.add(i)
        used_targets.add(s.keyword)
        path = scene_dir / f"q{k + 1:02d}.jpg"
        PILImage.fromarray(s.scene.image).save(path, format="JPEG", quality=JPEG_QUALITY)
        with PILImage.open(path) as img:  # exactly the pixels the image player will send
            image = np.asarray(img.convert("RGB"))
        items.append(Item(k + 1, query.spec.type, query.text, s.keyword, i, s.background, image,
                          s.target_mask, path))
    return items
