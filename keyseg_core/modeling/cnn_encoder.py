"""A small convolutional image encoder for a SAM trained from scratch.

SAM's ViT learns slowly from scratch: on one H200 in 2.5 minutes of stage 1, KeySeg-Tiny's 1.06 M
ViT reached category-prompted IoU 0.654 on held-out scenes, a 1.75 M residual CNN with the same
output grid 0.756 (../shared/notes/environment.md). A CNN brings locality and translation
equivariance that a ViT has to learn. This one maps (B, 3, S, S) to the same (B, C, S/p, S/p) grid
as the ViT it replaces (p = the ViT's patch size), so the prompt encoder, mask decoder, export and
streaming code see no difference: residual stages of stride 2 down to the grid, then dilated blocks
(rates 1, 2, 4, 8) for context across the whole image, then SAM's own neck (1x1 conv, per-location
channel LayerNorm, 3x3 conv, LayerNorm): every cell's feature has unit scale, as the mask decoder's
attention sees from the ViT. A first version normalised the whole map at once (GroupNorm(1)) and
reached half the ViT's category IoU at the same steps; with SAM's neck it still trails the ViT on an
H200 (0.287 against 0.464 in 400 s each, docs/results.md "KeySeg-Tiny v2"), so the ViT stays KeySeg-Tiny's encoder.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: stage 1 runs batch 8 on a CPU and 64 on a GPU, inference batch 1
    return nn.GroupNorm(min(8, channels // 4), channels)


class ResidualBlock(nn.Module):
    """x + conv3x3(act(norm(conv3x3(x)))): the shape of the input, optionally dilated."""

    def __init__(self, channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm1 = _norm(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.norm2 = _norm(channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        return self.act(x + self.norm2(self.conv2(y)))


class Downsample(nn.Module):
    """conv3x3 stride 2 + norm + GELU: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.norm = _norm(c_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of each location of a (B, C, H, W) map (SAM's neck norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CnnImageEncoder(nn.Module):
    """(B, 3, S, S) -> ((B, out_channels, S/stride, S/stride),): SamModel.get_image_embeddings reads [0]."""

    def __init__(self, out_channels: int, stride: int, width: int = 128, context_dilations: tuple[int, ...] = (1, 2, 4, 8)) -> None:
        super().__init__()
        n = int(math.log2(stride))
        if 2 ** n != stride or n < 2:
            raise ValueError(f"cnn encoder: stride {stride} (vision_config.patch_size) must be a power of two >= 4")
        widths = [max(width // 2 ** (n - 1 - i), 16) for i in range(n)]  # ..., width/2, width
        layers: list[nn.Module] = []
        prev = 3
        for i, c in enumerate(widths):
            layers.append(Downsample(prev, c))
            if i > 0:  # the full-resolution first stage stays a single conv: it is the costly one
                layers.append(ResidualBlock(c))
            prev = c
        layers += [ResidualBlock(prev, d) for d in context_dilations]
        self.body = nn.Sequential(*layers)
        self.neck = nn.Sequential(nn.Conv2d(prev, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                                  nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels))

    def forward(self, pixel_values: torch.Tensor, **_: object) -> tuple[torch.Tensor]:
        # (B, 3, S, S) -> (B, width, S/stride, S/stride) -> (B, out_channels, S/stride, S/stride)
        return (self.neck(self.body(pixel_values)),)


def cnn_encoder_for(vision_config, seed: int, width: int) -> CnnImageEncoder:
    """A CNN encoder with the ViT's output grid and width, drawn on the CPU from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CnnImageEncoder(vision_config.output_channels, vision_config.patch_size, width)
