"""Track ids for a query's instances, from one frame to the next, by mask IoU.

A robot acting on a detection needs to know it is the same object as a frame ago. Consecutive
masks of a moving object overlap much more than masks of two different objects, so each new mask
takes the id of the previous mask it overlaps best (greedily, best pairs first, above
`iou_threshold`). The previous mask is also tried moved by its track's last motion (constant
velocity of the mask's centroid), and the better overlap counts: a node that skips frames sees an
object move by a large part of its size, and plain IoU falls. When even the moved mask does not
overlap, a mask with the track's label (keyword) whose centroid lies within `gate` object sizes of
where the track's motion puts it continues the track (a gate on the predicted position, as
SORT-style trackers use; IoU pairs are matched first, then the nearest of these). The object's size
is the largest mask the track has had: a segmenter that finds only a sliver of the object for a
frame must not shrink the gate to the sliver's size. The motion is smoothed over matches
(`smoothing`), so one sliver's or one spill's off-centre centroid does not throw the prediction,
and the gate also measures from where the track was last seen: motion extrapolated over many
missed frames can overshoot an object that stopped or turned.
Area is no test: a thin object's mask eroded by 2 px keeps a sixth of its pixels. An id ends after
its object went unmatched for `lost_frames` frames in a row (the default, 30, is ByteTrack's track
buffer); a new query ends them all. Ids are never reused, so a new id always means a new track.
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
    velocity: np.ndarray  # centroid motion per frame, pixels (smoothed over matches)
    label: str | None = None
    missed: int = 0
    size: int = 0  # the largest mask area the track has had, pixels: the object's size for the gate

    def predicted(self) -> np.ndarray:
        """The last mask moved to where the track's motion puts it now."""
        dx, dy = np.round(self.velocity * (self.missed + 1)).astype(int)
        return shifted(self.mask, int(dx), int(dy)) if dx or dy else self.mask

    def gated_distance(self, mask: np.ndarray, centre: np.ndarray, label: str | None) -> float | None:
        """Distance to `centre` from where the track's motion puts its centroid, or from where it was
        last seen if that is nearer (motion read off slivers and extrapolated over missed frames can
        overshoot), in units of the object's size (square root of the larger of `mask`'s area and the
        track's size); None for another label or an empty mask."""
        area = np.count_nonzero(mask)
        if label != self.label or not area or not self.size:
            return None
        expected = self.centre + self.velocity * (self.missed + 1)
        nearest = min(np.linalg.norm(centre - expected), np.linalg.norm(centre - self.centre))
        return float(nearest / np.sqrt(max(area, self.size)))

    def matched(self, mask: np.ndarray, centre: np.ndarray, label: str | None, smoothing: float) -> None:
        """Continue the track with `mask`: motion, place, size and label follow it."""
        step = (centre - self.centre) / (self.missed + 1)
        self.velocity = smoothing * step + (1.0 - smoothing) * self.velocity
        self.mask, self.centre, self.missed, self.label = mask, centre, 0, label
        self.size = max(self.size, int(np.count_nonzero(mask)))


class MaskTracker:
    """Assigns track ids to each frame's instance masks (`update`); `reset` on a new query."""

    def __init__(self, iou_threshold: float = 0.1, lost_frames: int = 30, gate: float = 4.0,
                 smoothing: float = 0.5) -> None:
        if not 0.0 <= iou_threshold < 1.0:
            raise ValueError("iou_threshold must be in [0, 1)")
        if lost_frames < 1:
            raise ValueError("lost_frames must be >= 1")
        if gate < 0:
            raise ValueError("gate must be >= 0 (0: IoU matching only)")
        if not 0.0 < smoothing <= 1.0:
            raise ValueError("smoothing must be in (0, 1] (1: the last step's motion only)")
        self.iou_threshold = iou_threshold
        self.lost_frames = lost_frames
        self.gate = gate
        self.smoothing = smoothing
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

    def update(self, masks: list[np.ndarray], labels: list[str | None] | None = None) -> list[str]:
        """Track ids of `masks` (one frame's instances), in their order; `labels` (their keywords)
        keep the position gate from joining objects of different kinds."""
        labels = list(labels) if labels is not None else [None] * len(masks)
        if len(labels) != len(masks):
            raise ValueError(f"update: {len(labels)} labels for {len(masks)} masks")
        centres = [_centroid(m) for m in masks]
        pairs = []  # (tier, score, track, mask): IoU pairs (tier 1) before gated ones (tier 0)
        for ti, t in enumerate(self._tracks):
            for mi, m in enumerate(masks):
                if t.mask.shape != m.shape:
                    continue
                iou = self._overlap(t, m)
                if iou > self.iou_threshold:
                    pairs.append((1, iou, ti, mi))
                    continue
                distance = t.gated_distance(m, centres[mi], labels[mi]) if self.gate else None
                if distance is not None and distance <= self.gate:
                    pairs.append((0, -distance, ti, mi))
        ids: list[str | None] = [None] * len(masks)
        matched: set[int] = set()
        for _, _, ti, mi in sorted(pairs, reverse=True):
            if ti in matched or ids[mi] is not None:
                continue
            matched.add(ti)
            self._tracks[ti].matched(masks[mi], centres[mi], labels[mi], self.smoothing)
            ids[mi] = self._tracks[ti].id
        kept = []
        for ti, track in enumerate(self._tracks):
            if ti not in matched:
                track.missed += 1
            if track.missed < self.lost_frames:
                kept.append(track)
        for mi, mask in enumerate(masks):
            if ids[mi] is None:
                ids[mi] = str(next(self._ids))
                kept.append(_Track(ids[mi], mask, centres[mi], np.zeros(2), labels[mi],
                                   size=int(np.count_nonzero(mask))))
        self._tracks = kept
        return ids  # type: ignore[return-value]
