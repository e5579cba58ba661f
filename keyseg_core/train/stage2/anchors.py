"""Prompt anchors: an optional stage-2 loss for a model whose SAM was pretrained from scratch.

The paper fine-tunes a pretrained SAM, whose prompt space KeySeg's fused prompt S_hat learns to
land in through the mask loss alone. KeySeg-Tiny's SAM is pretrained here (`keyseg pretrain`) with
category prompts: one learned embedding per category that SAM segments. Pulling S_hat towards the
embedding of the sample's keyword gives the LLM, fusion and projection a dense target from the
first step, where the mask loss alone (one mask per sample, through a decoder that never saw S_hat)
barely moved the Dice in 400 steps. Weight 0 (the default) is the paper's objective.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn


TABLE_KEY = "prompt.weight"  # the stage-1 heads' category prompt embeddings (keyseg_core.train.stage1.loop)


class PromptAnchors(nn.Module):
    """Frozen (K, C) table of category prompts, one row per category name."""

    def __init__(self, table: torch.Tensor, names: list[str]) -> None:
        super().__init__()
        if table.shape[0] != len(names):
            raise ValueError(f"prompt_anchors: {table.shape[0]} category prompts for {len(names)} names")
        self.register_buffer("table", table.float(), persistent=False)
        self.rows = {name: i for i, name in enumerate(names)}
        self.scale = float(self.table.pow(2).mean())  # the loss is relative to the anchors' own size

    @classmethod
    def load(cls, path: str | Path, names: list[str]) -> PromptAnchors:
        """Rows of `path` (a stage-1 heads.safetensors) belong to `names`, in order."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"prompt_anchors: {path} does not exist (a stage-1 heads.safetensors)")
        tensors = load_file(str(path))
        if TABLE_KEY not in tensors:
            raise ValueError(f"prompt_anchors: {path} has no '{TABLE_KEY}' (keys: {', '.join(sorted(tensors))})")
        return cls(tensors[TABLE_KEY], names)

    def loss(self, prompts: torch.Tensor, seg_batch: torch.Tensor, keywords: list[str | tuple[str, ...] | None] | None,
             logits: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared distance of each [SEG]'s S_hat (N_seg, C) to its sample's keyword's anchor,
        over the anchors' mean square; [SEG]s whose keyword has no anchor are left out. The keyword
        is the sample's target name, so rows without [KEY] (seg_only, seg_sa) are anchored alike; a
        sample about several objects names them all, and its anchor is their prompts' mean.
        With a codebook fusion's (N_seg, K) `logits` (its rows are the anchors, in order), the
        cross-entropy of the logits with the anchor rows instead (several share the probability):
        the mixture's own objective."""
        picked, targets = [], []
        for j, i in enumerate(seg_batch.tolist()):
            names = keywords[i] if keywords else None
            names = (names,) if isinstance(names, str) else names or ()
            rows = [self.rows[n] for n in names if n in self.rows]
            if rows:
                picked.append(j)
                targets.append(rows)
        if not picked:
            return prompts.sum() * 0.0
        weights = torch.zeros(len(picked), self.table.shape[0], device=prompts.device)
        for k, rows in enumerate(targets):
            weights[k, rows] = 1.0 / len(rows)
        if logits is not None:
            log_probs = torch.log_softmax(logits[picked].float(), dim=-1)
            return -(weights * log_probs).sum(-1).mean()
        anchors = (weights.to(self.table.device) @ self.table).to(prompts.dtype)
        return (prompts[picked] - anchors).pow(2).mean() / self.scale

    def seed_codebook(self, codebook: torch.Tensor) -> None:
        """Copy the anchors into a codebook fusion's (K, C) prompts (K must be the anchors' count)."""
        if tuple(codebook.shape) != tuple(self.table.shape):
            raise ValueError(f"fusion.codebook: {codebook.shape[0]} prompts of width {codebook.shape[1]}, but "
                             f"prompt_anchors has {self.table.shape[0]} of width {self.table.shape[1]}")
        with torch.no_grad():
            codebook.copy_(self.table.to(codebook.dtype))
