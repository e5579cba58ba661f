"""Fusion module of KeySeg (paper section 3.3): S_hat = MLP(SelfAttn(CrossAttn(S, K) + S)).

- CrossAttn: query = the [SEG] embedding S, key = value = the [KEY] embeddings of the same sample
  (one [KEY] per sample in the paper; with several, each [SEG] attends over all of its sample's).
  The attention's input projections are the "shared latent space" of the paper.
- Residual: the cross-attention output is added back to S.
- SelfAttn: the refined [SEG] attends over itself together with the surrounding output sequence
  (the LLM's last hidden states of the whole sample: image tokens and text, padding masked). Only
  the refined [SEG]'s output is kept, which equals taking the [SEG] row of full self-attention.
- MLP: Linear(d, d) -> ReLU -> Linear(d, prompt_dim), LISA's `text_hidden_fcs`, mapping into SAM's
  prompt width; it runs in every configuration, so "[SEG] only" is exactly LISA.

Each switch in FusionConfig removes one term, giving the rows of the paper's Tables 3 and 4.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import FusionConfig


class FusionModule(nn.Module):
    """Refines each [SEG] embedding with its sample's [KEY] embeddings and output sequence."""

    def __init__(self, hidden_size: int, prompt_dim: int, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        self.cross_attn = (
            nn.MultiheadAttention(hidden_size, config.num_heads, batch_first=True) if config.cross_attn else None
        )
        self.self_attn = (
            nn.MultiheadAttention(hidden_size, config.num_heads, batch_first=True) if config.self_attn else None
        )
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.ReLU(inplace=False), nn.Linear(hidden_size, prompt_dim)
        )

    def forward(
        self,
        seg: torch.Tensor,
        seg_batch: torch.Tensor,
        key: torch.Tensor,
        key_batch: torch.Tensor,
        sequence: torch.Tensor,
        sequence_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Fuse.

        Args:
            seg: (N_seg, d) [SEG] embeddings S.
            seg_batch: (N_seg,) sample index of each [SEG].
            key: (N_key, d) [KEY] embeddings K (N_key may be 0).
            key_batch: (N_key,) sample index of each [KEY].
            sequence: (B, L, d) last-layer hidden states of the whole output sequence.
            sequence_mask: (B, L) bool, True at real (non-padding) tokens.
        Returns:
            (N_seg, prompt_dim) refined prompts S_hat for the SAM mask decoder.
        """
        x = seg
        if self.cross_attn is not None:
            x = self._cross(seg, seg_batch, key, key_batch)
        if self.self_attn is not None:
            x = self._self(x, sequence[seg_batch], sequence_mask[seg_batch])
        return self.mlp(x)

    def _cross(
        self, seg: torch.Tensor, seg_batch: torch.Tensor, key: torch.Tensor, key_batch: torch.Tensor
    ) -> torch.Tensor:
        """CrossAttn(Q=S, K=V=keys of the same sample) (+ S if residual)."""
        assert self.cross_attn is not None
        has_key = (seg_batch[:, None] == key_batch[None, :])  # (N_seg, N_key)
        out = seg
        if key.shape[0] > 0 and bool(has_key.any()):
            # Every [SEG] sees all keys of the batch, masked to its own sample's: (N_seg, 1, d) x (N_seg, N_key, d)
            keys = key.unsqueeze(0).expand(seg.shape[0], -1, -1)
            rows = has_key.any(dim=1)
            # a [SEG] whose sample has no [KEY] keeps S unchanged (an all-masked softmax would be NaN)
            pad = ~has_key
            pad[~rows] = False
            attended, _ = self.cross_attn(seg.unsqueeze(1), keys, keys, key_padding_mask=pad, need_weights=False)
            attended = attended.squeeze(1)
            fused = attended + seg if self.config.residual else attended
            out = torch.where(rows[:, None], fused, seg)
        return out

    def _self(self, refined: torch.Tensor, sequence: torch.Tensor, sequence_mask: torch.Tensor) -> torch.Tensor:
        """Row of SelfAttn([S'; sequence]) at S': the refined [SEG] attends over itself and its sample."""
        assert self.self_attn is not None
        query = refined.unsqueeze(1)  # (N, 1, d)
        context = torch.cat([query, sequence], dim=1)  # (N, 1+L, d)
        keep = torch.cat([torch.ones_like(sequence_mask[:, :1]), sequence_mask], dim=1)  # (N, 1+L)
        out, _ = self.self_attn(query, context, context, key_padding_mask=~keep, need_weights=False)
        return out.squeeze(1)
