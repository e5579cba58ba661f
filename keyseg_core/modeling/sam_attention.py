"""SAM image-encoder attention through `scaled_dot_product_attention`, with SAM's decomposed
relative-position bias as the additive `attn_mask`.

Why it is on by default (`build_sam` swaps every encoder block's attention): it computes exactly
what transformers' eager `SamVisionAttention` computes, softmax(scale * q.k + rel_h + rel_w) v,
with the same parameters under the same names (checkpoints load unchanged). SDPA scales q.k and
adds the mask before its softmax, as the eager code adds the bias to the scaled logits; only the
order of floating-point operations differs: float32 agrees to 1e-5, bf16 to bf16 rounding
(tests/core/test_sam_attention.py). What it saves over transformers' own SDPA class:
  - the relative-position lookup tables are index buffers made once on the model's device, not a
    CPU `arange` turned into an index on every call (a host-to-device copy per block per frame,
    which also keeps CUDA graphs from capturing the eager encoder);
  - no `F.interpolate` of the position tables: in SamModel a block always sees the grid its tables
    were made for (the patch embedding refuses any other image size), where interpolation is the
    identity; a grid of another size is refused by name instead.
Windowed blocks arrive batched (B * windows, ws, ws, C) from SamVisionLayer, one SDPA call for all.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def relative_index(size: int, device: torch.device | None = None) -> torch.Tensor:
    """(size, size) index into a (2 * size - 1)-row table: row q - k + size - 1 for query q, key k."""
    pos = torch.arange(size, device=device)
    return pos[:, None] - pos[None, :] + (size - 1)


class RelPosSdpaAttention(nn.Module):
    """Drop-in for transformers' SamVisionAttention (eager or SDPA): same submodules and parameters
    (qkv, proj, rel_pos_h, rel_pos_w), same input (N, h, w, C) and output ((N, h, w, C), None)."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        if not attn.use_rel_pos:
            raise ValueError("RelPosSdpaAttention needs use_rel_pos=True (SAM's encoder always has it)")
        self.num_attention_heads = attn.num_attention_heads
        self.scale = attn.scale
        self.qkv = attn.qkv
        self.proj = attn.proj
        self.rel_pos_h = attn.rel_pos_h
        self.rel_pos_w = attn.rel_pos_w
        self.use_rel_pos = True
        device = attn.rel_pos_h.device
        self.register_buffer("index_h", relative_index((attn.rel_pos_h.shape[0] + 1) // 2, device), persistent=False)
        self.register_buffer("index_w", relative_index((attn.rel_pos_w.shape[0] + 1) // 2, device), persistent=False)

    def relative_bias(self, query: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """(N, heads, h*w, c) queries -> (N, heads, h*w, h*w) additive bias rel_h[q, k_row] + rel_w[q, k_col]."""
        if (height, width) != (self.index_h.shape[0], self.index_w.shape[0]):
            raise ValueError(f"attention grid {height}x{width} differs from the {self.index_h.shape[0]}x"
                             f"{self.index_w.shape[0]} grid of its relative-position tables (image_size)")
        n, heads, _, c = query.shape
        grid = query.reshape(n, heads, height, width, c)
        table_h = self.rel_pos_h[self.index_h].to(query.dtype)  # (h, h, c)
        table_w = self.rel_pos_w[self.index_w].to(query.dtype)  # (w, w, c)
        rel_h = torch.einsum("nayxc,ykc->nayxk", grid, table_h)  # (N, heads, h, w, h): by key row
        rel_w = torch.einsum("nayxc,xkc->nayxk", grid, table_w)  # (N, heads, h, w, w): by key column
        bias = rel_h[..., :, None] + rel_w[..., None, :]
        return bias.reshape(n, heads, height * width, height * width)

    def forward(self, hidden_states: torch.Tensor, output_attentions: bool = False) -> tuple[torch.Tensor, None]:
        n, height, width, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).reshape(n, height * width, 3, self.num_attention_heads, -1)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, h*w, c)
        bias = self.relative_bias(query, height, width)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=self.scale)
        out = out.permute(0, 2, 1, 3).reshape(n, height, width, -1)
        return self.proj(out), None


def use_sdpa_attention(model: nn.Module) -> int:
    """Swap every SAM image-encoder block's attention for RelPosSdpaAttention; the number swapped
    (0 for an encoder without attention blocks, such as the CNN encoder)."""
    swapped = 0
    for layer in getattr(getattr(model, "vision_encoder", None), "layers", []):
        attn = getattr(layer, "attn", None)
        if attn is not None and hasattr(attn, "rel_pos_h") and not isinstance(attn, RelPosSdpaAttention):
            layer.attn = RelPosSdpaAttention(attn)
            swapped += 1
    return swapped
