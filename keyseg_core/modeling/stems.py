"""Convolutional stems for vision transformers trained from scratch.

A ViT's patch embedding is one linear map of each p x p patch. Trained from scratch on little data it
learns edges and colours slowly; a few stride-2 3x3 convolutions in its place (Xiao et al., "Early
Convolutions Help Transformers See Better", 2021) give the same token grid with a local image prior.
Towers trained from scratch here (no pretrained weights exist offline) can use one
(`backbone.vision_stem`, `sam.stem`; measured in docs/training.md); pretrained towers keep their own.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class ConvStem(nn.Module):
    """log2(stride) conv 3x3 / stride 2 + GELU layers, widths doubling up to `out_channels / 2`, then a
    1x1 projection: (B, C_in, H, W) -> (B, C_out, H / stride, W / stride), like the patch conv it replaces."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        n = int(math.log2(stride))
        if 2 ** n != stride or n < 1:
            raise ValueError(f"conv stem: patch size {stride} must be a power of two >= 2")
        widths = [max(out_channels // 2 ** (n - i), 16) for i in range(n)]  # ..., out/4, out/2
        layers: list[nn.Module] = []
        prev = in_channels
        for width in widths:
            layers += [nn.Conv2d(prev, width, 3, stride=2, padding=1), nn.GELU()]
            prev = width
        layers.append(nn.Conv2d(prev, out_channels, 1))
        self.layers = nn.Sequential(*layers)

    @property
    def weight(self) -> torch.Tensor:
        """The first convolution's weight: callers read the patch embedding's dtype from `.weight`."""
        return self.layers[0].weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def conv_stem_like(patch: nn.Conv2d, seed: int) -> ConvStem:
    """A ConvStem for a patch conv (kernel = stride = patch size), drawn on the CPU from `seed` so it
    comes out the same on every device, then given the patch conv's dtype and device."""
    if patch.kernel_size != patch.stride or patch.kernel_size[0] != patch.kernel_size[1]:
        raise ValueError(f"conv stem: expected a square patch conv, got kernel {patch.kernel_size} stride {patch.stride}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stem = ConvStem(patch.in_channels, patch.out_channels, patch.kernel_size[0])
    return stem.to(device=patch.weight.device, dtype=patch.weight.dtype)
