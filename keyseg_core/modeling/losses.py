"""Mask losses (LISA's formulation): per-mask sigmoid BCE and Dice, averaged over masks.

Pixels labelled 255 (ReasonSeg "ignore" regions) carry no loss. Each mask's loss is the mean over its
valid pixels, so large and small images weigh the same, then masks are averaged across the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from keyseg_core.config.labels import IGNORE_PIXEL


def _flatten(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per mask: (logits, 0/1 target, validity weight), each flattened."""
    if len(logits) != len(targets):
        raise ValueError(f"{len(logits)} predicted mask sets but {len(targets)} ground-truth sets")
    out = []
    for i, (lg, gt) in enumerate(zip(logits, targets)):
        if lg.shape != gt.shape:
            raise ValueError(f"sample {i}: predicted masks {tuple(lg.shape)} vs ground truth {tuple(gt.shape)}")
        for m_lg, m_gt in zip(lg, gt):
            valid = (m_gt != IGNORE_PIXEL).float().flatten()
            out.append((m_lg.float().flatten(), (m_gt == 1).float().flatten(), valid))
    return out


def mask_bce_loss(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean over masks of the mean BCE-with-logits over each mask's valid pixels."""
    per_mask = [
        (F.binary_cross_entropy_with_logits(x, y, reduction="none") * v).sum() / v.sum().clamp(min=1.0)
        for x, y, v in _flatten(logits, targets)
    ]
    return torch.stack(per_mask).mean() if per_mask else _zero(logits)


def mask_dice_loss(logits: list[torch.Tensor], targets: list[torch.Tensor], smooth: float = 1.0) -> torch.Tensor:
    """Mean over masks of 1 - (2|P∩G| + s) / (|P| + |G| + s) with soft P = sigmoid(logits), valid pixels only."""
    per_mask = []
    for x, y, v in _flatten(logits, targets):
        p = torch.sigmoid(x) * v
        inter = (p * y).sum()
        per_mask.append(1.0 - (2.0 * inter + smooth) / (p.sum() + (y * v).sum() + smooth))
    return torch.stack(per_mask).mean() if per_mask else _zero(logits)


def _zero(logits: list[torch.Tensor]) -> torch.Tensor:
    """A zero that stays connected to the graph (no masks in the batch)."""
    return sum((lg.sum() * 0.0 for lg in logits), torch.zeros(()))


def per_mask_bce_dice(logits: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., H, W) logits and 0/1 targets (no ignore label) -> per-mask BCE and Dice, each (...).

    The same per-mask values as `mask_bce_loss` / `mask_dice_loss`, for many masks in one tensor:
    stage 1 decodes every prompt of a batch at once and averages over the rows it drew.
    """
    x, y = logits.float().flatten(-2), targets.float().flatten(-2)
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none").mean(-1)
    p = torch.sigmoid(x)
    dice = 1.0 - (2.0 * (p * y).sum(-1) + smooth) / (p.sum(-1) + y.sum(-1) + smooth)
    return bce, dice
