"""Track ids for a query's instances, from one frame to the next, by mask IoU.

A robot acting on a detection needs to know it is the same object as a frame ago. Consecutive
masks of a moving object overlap much more than masks of two different objects, so each new mask
takes the id of the previous mask it overlaps best (greedily, best pairs first, above
`iou_threshold`). The previous mask is also tried moved by its track's last motion (constant
velocity of the mask's centroid), and the better overlap counts: a node that skips frames sees an
object move by a large part of its size, and plain IoU falls. An id ends after its object went
unmatched for `lost_frames` frames in a row; a new query ends them all. Ids are never reused, so a
new id always means a new track.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one size (0 for two empty masks)."""
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


def _centroid(mask: np.ndarray) -> np.ndarray:
    """(u, v) mean of a mask's pixels, from its row and column sums (no per-pixel index arrays)."""
    area = np.count_nonzero(mask)
    if not area:
        return np.zeros(2)
    return np.array([mask.sum(axis=0) @ np.arange(mask.shape[1]), mask.sum(axis=1) @ np.arange(mask.shape[0])]) / area


def shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """`mask` moved by (dx, dy) pixels; what moves out of the image is lost, what comes in is 0."""
    height, width = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= width or abs(dy) >= height:
        return out
    src_y, dst_y = slice(max(-dy, 0), height - max(dy, 0)), slice(max(dy, 0), height - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), width - max(dx, 0)), slice(max(dx, 0), width - max(-dx, 0))
    out[dst_y, dst_x] = mask[src_y, src_x]
    return out


@dataclass
class _Track:
    id: str
    mask: np.ndarray
    centre: np.ndarray
    velocity: np.ndarray  # centroid motion per frame, pixels
    missed: int = 0

    def predicted(self) -> np.ndarray:
        """The last mask moved to where the track's motion puts it now."""
        dx, dy = np.round(self.velocity * (self.missed + 1)).astype(int)
        return shifted(self.mask, int(dx), int(dy)) if dx or dy else self.mask


class MaskTracker:
    """Assigns track ids to each frame's instance masks (`update`); `reset` on a new query."""

    def __init__(self, iou_threshold: float = 0.1, lost_frames: int = 10) -> None:
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError("iou_threshold must be in [0, 1)")
        if lost_frames < 1:
            raise ValueError("lost_frames must be >= 1")
        self.iou_threshold = iou_threshold
        self.lost_frames = lost_frames
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    def reset(self) -> None:
        """Forget every track (a new query): the next masks get new ids."""
        self._tracks = []

    @staticmethod
    def _overlap(track: _Track, mask: np.ndarray) -> float:
        """IoU with the track's predicted mask, or its last one if that overlaps more (an object
        that bounced or stopped)."""
        return max(mask_iou(track.predicted(), mask), mask_iou(track.mask, mask))

    def update(self, masks: list[np.ndarray]) -> list[str]:
        """Track ids of `masks` (one frame's instances), in their order."""
        pairs = sorted(((self._overlap(t, m), ti, mi) for ti, t in enumerate(self._tracks)
                        for mi, m in enumerate(masks) if t.mask.shape == m.shape), reverse=True)
        ids: list[str | None] = [None] * len(masks)
        matched: set[int] = set()
        for iou, ti, mi in pairs:
            if iou <= self.iou_threshold:
                break
            if ti in matched or ids[mi] is not None:
                continue
            matched.add(ti)
            track = self._tracks[ti]
            centre = _centroid(masks[mi])
            track.velocity = (centre - track.centre) / (track.missed + 1)
            track.mask, track.centre, track.missed, ids[mi] = masks[mi], centre, 0, track.id
        kept = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched:
                track.missed += 1
            if track.missed < self.lost_frames:
                kept.append(track)
        for mi, mask in enumerate(masks):
            if ids[mi] is None:
                ids[mi] = str(next(self._ids))
                kept.append(_Track(ids[mi], mask, _centroid(mask), np.zeros(2)))
        self._tracks = kept
        return ids  # type: ignore[return-value]
