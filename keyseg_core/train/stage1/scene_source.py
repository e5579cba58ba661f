"""Stage 1's scenes, prepared off the training step: generated ahead by workers, or drawn from a pool.

Generating a scene costs about 7 ms on a free core and 45 ms on one shared with training; a GPU step
of 64 scenes takes about 120 ms. So scenes are prepared (generated, resized for SAM and for the vision
tower, kept as uint8) by worker processes, and the training step only stacks them and normalises on
its device. Two sources, both a pure function of (scene_seed, seed, step), so a resumed run sees
exactly what an uninterrupted one would:

- stream (pool = 0): step s trains on scenes s*B .. s*B+B-1 of the train split, every scene new.
- pool (pool = N): scenes 0..N-1 are prepared once; step s draws B of them and a horizontal flip for
  each from an RNG seeded by (seed, step). Scenes are revisited (about visits/N times each), which is
  how the GPU recipe sees 10x more scenes a minute than the generator makes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from keyseg_core.modeling.processor import clip_canvas
from keyseg_core.modeling.sam import resize_for_sam
from keyseg_core.scenes import SceneConfig, load_knowledge, make_sample


@dataclass(frozen=True)
class SceneSpec:
    """What a worker needs to prepare scene `index` of a split (picklable, no model)."""

    seed: int
    split: str
    width: int
    height: int
    min_objects: int
    max_objects: int
    sam_size: int
    clip_size: int
    clip_mode: str  # the backbone's image_preprocess: 'pad' or 'crop'

    def scene_config(self) -> SceneConfig:
        return SceneConfig(width=self.width, height=self.height, min_objects=self.min_objects,
                           max_objects=self.max_objects)


@dataclass
class PreparedScene:
    """One scene as stage 1 consumes it; uint8 throughout (about 210 KB at 320x240)."""

    sam_rgb: np.ndarray  # (rh, rw, 3): longest side resized to SAM's input (not yet normalised or padded)
    clip_rgb: np.ndarray  # (s, s, 3): the vision tower's canvas (not yet normalised)
    labels: np.ndarray  # (H, W): 0 background, i + 1 object i
    categories: list[int]  # per object: category index (0-based, sorted category names)

    @property
    def nbytes(self) -> int:
        return self.sam_rgb.nbytes + self.clip_rgb.nbytes + self.labels.nbytes

    def flipped(self) -> PreparedScene:
        """The mirror image. SAM's resize commutes with a flip (its filter is symmetric) and the
        padding comes after; the vision tower's centred pad differs by at most one pixel when the
        padding is odd."""
        return PreparedScene(self.sam_rgb[:, ::-1].copy(), self.clip_rgb[:, ::-1].copy(), self.labels[:, ::-1].copy(),
                             self.categories)


_NAMES: list[str] = []


def prepare_scene(spec: SceneSpec, index: int) -> PreparedScene:
    """Scene `index` of (spec.seed, spec.split), exactly as make_sample draws it, prepared for stage 1."""
    if not _NAMES:
        _NAMES.extend(sorted(load_knowledge().categories))
    scene = make_sample(spec.seed, spec.split, index, spec.scene_config()).scene
    return PreparedScene(resize_for_sam(scene.image, spec.sam_size), clip_canvas(scene.image, spec.clip_size, spec.clip_mode),
                         scene.labels.astype(np.uint8), [_NAMES.index(o.category) for o in scene.objects])


def _prepare_range(args: tuple[SceneSpec, int, int]) -> list[PreparedScene]:
    spec, first, count = args
    return [prepare_scene(spec, i) for i in range(first, first + count)]


def _context() -> mp.context.BaseContext:
    # fork shares the loaded knowledge base and glyph caches; spawn where fork is unavailable
    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


def prepare_many(spec: SceneSpec, first: int, count: int, workers: int, chunk: int = 64) -> list[PreparedScene]:
    """Scenes first..first+count-1, prepared by `workers` processes (0 = in this process), in order."""
    if workers == 0 or count <= chunk:
        return _prepare_range((spec, first, count))
    jobs = [(spec, start, min(chunk, first + count - start)) for start in range(first, first + count, chunk)]
    with _context().Pool(workers) as pool:
        return [scene for part in pool.imap(_prepare_range, jobs) for scene in part]


def available_memory() -> int | None:
    """Bytes the kernel says a new allocation can take (MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_pool_fits(spec: SceneSpec, pool: int, headroom: float = 0.5) -> None:
    """Refuse a pool that would take more than `headroom` of the available memory, before training."""
    if pool == 0:
        return
    per_scene = prepare_scene(spec, 0).nbytes
    need, free = per_scene * pool, available_memory()
    if free is not None and need > headroom * free:
        raise ValueError(f"pool: {pool} scenes need about {need / 2**30:.1f} GiB ({per_scene / 1024:.0f} KiB each), "
                         f"more than half of the {free / 2**30:.1f} GiB available; lower pool")


class SceneSource:
    """Batches of prepared scenes for steps start, start+1, ...: the stream or the pool (module doc)."""

    def __init__(self, spec: SceneSpec, batch_size: int, seed: int, pool: int = 0, workers: int = 0,
                 flip: bool = True) -> None:
        self.spec, self.batch_size, self.seed, self.workers, self.flip = spec, batch_size, seed, workers, flip
        self.pool: list[PreparedScene] = []
        if pool:
            check_pool_fits(spec, pool)
            self.pool = prepare_many(spec, 0, pool, workers)

    def batch(self, step: int) -> list[PreparedScene]:
        """The scenes of optimiser step `step` (0-based)."""
        if not self.pool:
            return prepare_many(self.spec, step * self.batch_size, self.batch_size, 0)
        rng = np.random.default_rng([self.seed, step, 7])  # 7: this draw's own stream beside the prompts'
        picks = rng.integers(len(self.pool), size=self.batch_size)
        flips = rng.random(self.batch_size) < 0.5 if self.flip else np.zeros(self.batch_size, bool)
        return [self.pool[i].flipped() if f else self.pool[i] for i, f in zip(picks, flips)]

    def batches(self, start: int, end: int) -> Iterator[list[PreparedScene]]:
        """Steps start..end-1 in order; streamed scenes are prepared by workers a few steps ahead."""
        if self.pool or self.workers == 0:
            for step in range(start, end):
                yield self.batch(step)
            return
        loader = torch.utils.data.DataLoader(_StepBatches(self, start, end), batch_size=None, num_workers=self.workers,
                                             prefetch_factor=4, multiprocessing_context=_context(),
                                             collate_fn=_keep, persistent_workers=False)
        yield from loader


def _keep(batch: list[PreparedScene]) -> list[PreparedScene]:
    return batch


class _StepBatches(torch.utils.data.Dataset):
    def __init__(self, source: SceneSource, start: int, end: int) -> None:
        self.source, self.start, self.end = source, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, i: int) -> list[PreparedScene]:
        torch.set_num_threads(1)
        return self.source.batch(self.start + i)


def default_workers() -> int:
    """One worker per core beyond the trainer's own, at most 15 (the GPU machine has 16 cores)."""
    return max(0, min(15, (os.cpu_count() or 1) - 1))
