"""LISA's segmentation metrics, exactly: prediction = logits > 0 at the original resolution,
pixels labelled 255 excluded from intersection and union; gIoU = mean per-mask IoU where a mask
with an empty union scores 1.0; cIoU = total intersection / total union over the split."""

from __future__ import annotations

from typing import Any

import numpy as np

from keyseg_core.config.labels import IGNORE_PIXEL


def _numpy(x: Any) -> np.ndarray:
    """Accept numpy arrays and torch tensors without importing torch."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def intersection_union(prediction: Any, target: Any, ignore_index: int = IGNORE_PIXEL) -> tuple[int, int]:
    """Foreground intersection and union of one mask.

    prediction: HxW logits (foreground where > 0) or a bool mask.
    target: HxW with 1 = foreground, 0 = background, `ignore_index` = not scored.
    """
    pred = _numpy(prediction)
    gt = _numpy(target)
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {pred.shape} != target shape {gt.shape}; predict at the original resolution"
        )
    pred = pred if pred.dtype == bool else pred > 0
    valid = gt != ignore_index
    pred = pred & valid
    fg = (gt == 1) & valid
    return int(np.count_nonzero(pred & fg)), int(np.count_nonzero(pred | fg))


def mask_iou(prediction: Any, target: Any, ignore_index: int = IGNORE_PIXEL) -> float:
    """Per-mask IoU; 1.0 when both prediction and target are empty (after ignoring)."""
    inter, union = intersection_union(prediction, target, ignore_index)
    return 1.0 if union == 0 else inter / union


class IoUAccumulator:
    """Accumulates gIoU and cIoU over a split; `update` once per (prediction, target) mask."""

    def __init__(self, ignore_index: int = IGNORE_PIXEL) -> None:
        self.ignore_index = ignore_index
        self.iou_sum = 0.0
        self.count = 0
        self.intersection = 0
        self.union = 0

    def update(self, prediction: Any, target: Any) -> float:
        """Add one mask; returns its IoU."""
        inter, union = intersection_union(prediction, target, self.ignore_index)
        iou = 1.0 if union == 0 else inter / union
        self.iou_sum += iou
        self.count += 1
        self.intersection += inter
        self.union += union
        return iou

    def merge(self, other: IoUAccumulator) -> None:
        """Fold in another accumulator (e.g. from another process) before `summary`."""
        self.iou_sum += other.iou_sum
        self.count += other.count
        self.intersection += other.intersection
        self.union += other.union

    def summary(self) -> dict[str, float | int]:
        """giou, ciou, count, intersection, union.

        cIoU of a split whose total union is empty is 0.0, as LISA's intersection / (union + 1e-10) gives.
        """
        if self.count == 0:
            raise RuntimeError("summary() before any update()")
        return {
            "giou": self.iou_sum / self.count,
            "ciou": 0.0 if self.union == 0 else self.intersection / self.union,
            "count": self.count,
            "intersection": self.intersection,
            "union": self.union,
        }
