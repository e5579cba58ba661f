"""Optimizer and learning-rate schedule, shared by stage 1 (`keyseg pretrain`) and stage 2 (`keyseg train`).

A stage's config carries `optimizer: OptimizerConfig`, `schedule: ScheduleConfig` and `max_steps`;
both loops build AdamW with `make_optimizer` and set each step's rate with `learning_rate` + `set_lr`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from keyseg_core.config.schema import help_field


@dataclass
class OptimizerConfig:
    """AdamW (LISA: lr 3e-4, betas (0.9, 0.95), no weight decay)."""

    lr: float = help_field("peak learning rate", default=3e-4)
    betas: list[float] = help_field("AdamW betas", default_factory=lambda: [0.9, 0.95])
    eps: float = help_field("AdamW epsilon", default=1e-8)
    weight_decay: float = help_field("decoupled weight decay (not applied to biases and norms)", default=0.0)
    lr_scale: dict[str, float] = help_field(
        "learning-rate multipliers by parameter-name prefix (names in the KeySeg model, or in stage 1's "
        "vision_tower/sam/heads), e.g. {sam.: 0.0} keeps a stage-1 SAM as it is while still saving it; "
        "the longest matching prefix wins, and every prefix must match a trainable parameter",
        default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: {self.lr} must be > 0")
        for prefix, scale in self.lr_scale.items():
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"lr_scale: key {prefix!r} must be a parameter-name prefix such as 'sam.'")
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale < 0:
                raise ValueError(f"lr_scale.{prefix}: {scale!r} must be a number >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: {self.betas} must be two numbers in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: {self.weight_decay} must be >= 0")


@dataclass
class ScheduleConfig:
    """Linear warm-up from 0, then decay to `min_lr_ratio * lr` at `max_steps` (LISA: 100 warm-up, linear)."""

    warmup_steps: int = help_field("optimizer steps of linear warm-up", default=100)
    decay: Literal["linear", "cosine", "constant"] = help_field("shape after warm-up", default="linear")
    min_lr_ratio: float = help_field("final learning rate as a fraction of the peak", default=0.0)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: {self.warmup_steps} must be >= 0")
        if self.decay not in ("linear", "cosine", "constant"):
            raise ValueError(f"decay: '{self.decay}' is not one of linear, cosine, constant")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: {self.min_lr_ratio} must be in [0, 1]")


class Scheduled(Protocol):
    """What a stage's config gives the optimizer and the schedule."""

    optimizer: OptimizerConfig
    schedule: ScheduleConfig
    max_steps: int


def learning_rate(step: int, config: Scheduled) -> float:
    """lr for optimizer step `step` (0-based): linear warm-up, then linear/cosine/constant decay."""
    peak, s = config.optimizer.lr, config.schedule
    if step < s.warmup_steps:
        return peak * (step + 1) / s.warmup_steps
    if s.decay == "constant":
        return peak
    span = max(1, config.max_steps - s.warmup_steps)
    progress = min(1.0, (step - s.warmup_steps) / span)
    shape = 1 - progress if s.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    floor = peak * s.min_lr_ratio
    return floor + (peak - floor) * shape


def make_optimizer(model: torch.nn.Module, config: Scheduled) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases, norms and other 1-D tensors; each
    group carries its `lr_scale` (optimizer.lr_scale, by longest name prefix), applied by `set_lr`."""
    o = config.optimizer
    prefixes = sorted(o.lr_scale, key=len, reverse=True)
    groups: dict[tuple[bool, float], list] = {}
    used = set()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = name.removeprefix("module.").removeprefix("model.")  # DDP's and LossModule's wrappers
        prefix = next((x for x in prefixes if name.startswith(x)), None)
        used.add(prefix)
        groups.setdefault((p.ndim >= 2, o.lr_scale[prefix] if prefix else 1.0), []).append(p)
    unused = [x for x in prefixes if x not in used]
    if unused:
        raise ValueError(f"optimizer.lr_scale.{unused[0]}: matches no trainable parameter name")
    param_groups = [{"params": params, "weight_decay": o.weight_decay if decay else 0.0, "lr_scale": scale}
                    for (decay, scale), params in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1]))]
    return torch.optim.AdamW(param_groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The schedule's lr for this step, times each group's lr_scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
