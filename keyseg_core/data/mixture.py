"""Mix several data sets by sampling ratio (LISA: sem:refer:vqa:reason = 9:3:3:1).

Each position of an epoch is assigned to a data set by the ratios, and each data set is walked
through its own shuffled order (cycling when it is short), so every item is seen before any
repeats. The plan depends only on (seed, epoch): reruns and DataLoader workers agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LISA_RATIOS = {"sem": 9.0, "refer": 3.0, "vqa": 3.0, "reason": 1.0}


def parse_ratios(text: str) -> dict[str, float]:
    """'sem=9,refer=3,vqa=3,reason=1' -> {'sem': 9.0, ...}."""
    ratios = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            ratios[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"bad ratio '{part}': expected name=number")
    return ratios


class MixtureDataset:
    """Map-style data set over `length` positions drawn from `datasets` by `ratios`."""

    def __init__(
        self, datasets: Mapping[str, Sequence[Any]], ratios: Mapping[str, float], length: int, seed: int = 0
    ) -> None:
        if set(datasets) != set(ratios):
            raise ValueError(f"ratios name {sorted(ratios)} but data sets are {sorted(datasets)}")
        for name, ratio in ratios.items():
            if not ratio > 0:
                raise ValueError(f"ratio of '{name}' must be > 0, got {ratio}")
            if len(datasets[name]) == 0:
                raise ValueError(f"data set '{name}' is empty")
        if length <= 0:
            raise ValueError(f"length must be > 0, got {length}")
        self.names = sorted(datasets)
        self.datasets = dict(datasets)
        weights = np.array([ratios[n] for n in self.names], dtype=np.float64)
        self.probs = weights / weights.sum()
        self.length = length
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the plan for `epoch` (call before each epoch for a fresh mix)."""
        rng = np.random.default_rng([self.seed, epoch])
        which = rng.choice(len(self.names), size=self.length, p=self.probs)
        index = np.empty(self.length, dtype=np.int64)
        for k, name in enumerate(self.names):
            positions = np.flatnonzero(which == k)
            size = len(self.datasets[name])
            reps = -(-len(positions) // size) if len(positions) else 0
            order = np.concatenate([rng.permutation(size) for _ in range(reps)]) if reps else np.empty(0, np.int64)
            index[positions] = order[: len(positions)]
        self.which, self.index = which, index

    def source_of(self, position: int) -> tuple[str, int]:
        """(data set name, item index) that `position` reads."""
        return self.names[int(self.which[position])], int(self.index[position])

    def counts(self) -> dict[str, int]:
        return {n: int((self.which == k).sum()) for k, n in enumerate(self.names)}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, position: int) -> Any:
        if not -self.length <= position < self.length:
            raise IndexError(position)
        name, index = self.source_of(position % self.length)
        return self.datasets[name][index]
