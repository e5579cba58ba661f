"""Fusion module of KeySeg (paper section 3.3): S_hat = MLP(SelfAttn(CrossAttn(S, K) + S)).

- Projection: with `space: prompt` (default) S and the output sequence go through P_s and K through
  P_k, each Linear(d, d) -> ReLU -> Linear(d, C) (LISA's `text_hidden_fcs` shape), into SAM's prompt
  width C, the "shared latent space" where the attentions run; the MLP is then C -> C. With
  `space: llm` the attentions run in the LLM width d and the MLP is the d -> C projection, so the
  "[SEG] only" row is exactly LISA.
- CrossAttn: query = the [SEG] embedding, key = value = the [KEY] embeddings of the same sample
  (one [KEY] per sample in the paper; with several, each [SEG] attends over all of its sample's).
- Residual: the cross-attention output is added back to S.
- SelfAttn: the refined [SEG] attends over itself together with the surrounding output sequence
  (the LLM's last hidden states of the whole sample: image tokens and text, padding masked). Only
  the refined [SEG]'s output is kept, which equals taking the [SEG] row of full self-attention.
- MLP: Linear -> ReLU -> Linear, producing the sparse prompt for SAM's mask decoder.
- Codebook (`codebook: K`, not in the paper): the MLP's output attends over K learned prompts
  (scaled dot products, a learned scale) and S_hat is their softmax mixture. A SAM trained from
  scratch knows only its category prompts: a regressed S_hat that is unsure between categories
  lands between them, where that SAM segments nothing, while a mixture stays on the prompts it knows
  (measured in docs/results.md, "KeySeg-Tiny v2").

Each switch in FusionConfig removes one term, giving the rows of the paper's Tables 3 and 4.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from keyseg_core.config.model import FusionConfig


def _two_layer(d_in: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_in), nn.ReLU(), nn.Linear(d_in, d_out))


class FusionModule(nn.Module):
    """Refines each [SEG] embedding with its sample's [KEY] embeddings and output sequence."""

    def __init__(self, hidden_size: int, prompt_dim: int, config: FusionConfig) -> None:
        super().__init__()
        self.config = config
        in_prompt_space = config.space == "prompt"
        width = prompt_dim if in_prompt_space else hidden_size
        if (config.cross_attn or config.self_attn) and width % config.num_heads:
            raise ValueError(f"fusion.num_heads: {config.num_heads} does not divide the attention width {width} "
                             f"(fusion.space '{config.space}')")
        self.proj_seg = _two_layer(hidden_size, prompt_dim) if in_prompt_space else None  # P_s
        self.proj_key = _two_layer(hidden_size, prompt_dim) if in_prompt_space and config.cross_attn else None  # P_k
        self.cross_attn = nn.MultiheadAttention(width, config.num_heads, batch_first=True) if config.cross_attn else None
        self.self_attn = nn.MultiheadAttention(width, config.num_heads, batch_first=True) if config.self_attn else None
        self.mlp = _two_layer(width, prompt_dim)
        # (K, C) prompts the MLP's output attends over; N(0, 1) rows like stage 1's category prompts until
        # copied from them, and a learned scale of the dot products (1/sqrt(C) at first)
        self.codebook = nn.Parameter(torch.randn(config.codebook, prompt_dim)) if config.codebook else None
        self.logit_scale = nn.Parameter(torch.tensor(-0.5 * math.log(prompt_dim))) if config.codebook else None

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
        return self.fuse(seg, seg_batch, key, key_batch, sequence, sequence_mask)[0]

    def fuse(self, seg: torch.Tensor, seg_batch: torch.Tensor, key: torch.Tensor, key_batch: torch.Tensor,
             sequence: torch.Tensor, sequence_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`forward`'s S_hat (N_seg, C) and, with a codebook, the (N_seg, K) logits that mix it (else None)."""
        x = self.proj_seg(seg) if self.proj_seg is not None else seg  # (N_seg, w)
        if self.cross_attn is not None:
            k = self.proj_key(key) if self.proj_key is not None else key  # (N_key, w)
            x = self._cross(x, seg_batch, k, key_batch)
        if self.self_attn is not None:
            context = sequence[seg_batch]  # (N_seg, L, d)
            context = self.proj_seg(context) if self.proj_seg is not None else context  # (N_seg, L, w)
            x = self._self(x, context, sequence_mask[seg_batch])
        out = self.mlp(x)  # (N_seg, C)
        if self.codebook is None:
            return out, None
        codebook = self.codebook.to(out.dtype)
        logits = self.logit_scale.exp() * out @ codebook.T  # (N_seg, K)
        return logits.softmax(dim=-1) @ codebook, logits

    def _cross(
        self, seg: torch.Tensor, seg_batch: torch.Tensor, key: torch.Tensor, key_batch: torch.Tensor
    ) -> torch.Tensor:
        """CrossAttn(Q=S, K=V=keys of the same sample) (+ S if residual)."""
        assert self.cross_attn is not None
        has_key = seg_batch[:, None] == key_batch[None, :]  # (N_seg, N_key)
        rows = has_key.any(dim=1)
        if not bool(rows.any()):
            return seg
        # every [SEG] sees all keys of the batch, masked to its own sample's: (N_seg, 1, w) x (N_seg, N_key, w)
        keys = key.unsqueeze(0).expand(seg.shape[0], -1, -1)
        pad = ~has_key
        pad[~rows] = False  # rows without a [KEY] are computed unmasked and discarded below (no NaN)
        attended, _ = self.cross_attn(seg.unsqueeze(1), keys, keys, key_padding_mask=pad, need_weights=False)
        attended = attended.squeeze(1)
        fused = attended + seg if self.config.residual else attended
        # a [SEG] whose sample has no [KEY] keeps S unchanged
        return torch.where(rows[:, None], fused, seg)

    def _self(self, refined: torch.Tensor, sequence: torch.Tensor, sequence_mask: torch.Tensor) -> torch.Tensor:
        """Row of SelfAttn([S'; sequence]) at S': the refined [SEG] attends over itself and its sample."""
        assert self.self_attn is not None
        query = refined.unsqueeze(1)  # (N, 1, w)
        context = torch.cat([query, sequence], dim=1)  # (N, 1+L, w)
        keep = torch.cat([torch.ones_like(sequence_mask[:, :1]), sequence_mask], dim=1)  # (N, 1+L)
        out, _ = self.self_attn(query, context, context, key_padding_mask=~keep, need_weights=False)
        return out.squeeze(1)
