"""What stage 1 learns from: a batch of prepared scenes on the training device, and each cell's category mix.

Every object of every scene is supervised (train/stage1/loop.py): its mask through SAM's prompts, and
the share of each vision-tower patch and SAM embedding cell that each category covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from keyseg_core.modeling.processor import normalise_clip
from keyseg_core.modeling.sam import normalise_pad_sam
from keyseg_core.train.stage1.scene_source import PreparedScene


@dataclass
class SceneBatch:
    """Prepared scenes stacked on the training device; objects padded to the batch's most."""

    sam_pixels: torch.Tensor  # (B, 3, S, S) SAM input
    clip_pixels: torch.Tensor  # (B, 3, s, s) vision-tower input
    labels: torch.Tensor  # (B, H, W) long instance ids (0 background, i + 1 object i)
    categories: torch.Tensor  # (B, N) long category index; padding rows hold 0
    valid: torch.Tensor  # (B, N) bool: row i of scene b is a real object
    resized_hw: tuple[int, int]  # SAM's resized image inside its padded square
    original_hw: tuple[int, int]

    @classmethod
    def stack(cls, scenes: list[PreparedScene], sam_size: int, device: torch.device) -> SceneBatch:
        """Upload the uint8 scenes once (pinned, non-blocking on a GPU), then normalise on the device."""
        shapes = {(s.sam_rgb.shape, s.labels.shape) for s in scenes}
        if len(shapes) != 1:
            raise ValueError(f"scenes of one batch must share a size, got {sorted(shapes)}")
        n = max(len(s.categories) for s in scenes)
        cats = np.zeros((len(scenes), n), np.int64)
        valid = np.zeros((len(scenes), n), bool)
        for b, s in enumerate(scenes):
            cats[b, :len(s.categories)] = s.categories
            valid[b, :len(s.categories)] = True

        def up(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

        sam_rgb = up(np.stack([s.sam_rgb for s in scenes]))
        clip_rgb = up(np.stack([s.clip_rgb for s in scenes]))
        return cls(normalise_pad_sam(sam_rgb, sam_size), normalise_clip(clip_rgb),
                   up(np.stack([s.labels for s in scenes])).long(), up(cats), up(valid),
                   tuple(scenes[0].sam_rgb.shape[:2]), tuple(scenes[0].labels.shape))


def category_maps(labels: torch.Tensor, categories: torch.Tensor) -> torch.Tensor:
    """(B, H, W) instance ids + (B, N) categories -> (B, H, W) class ids (0 background, c + 1 category c)."""
    lookup = torch.cat([categories.new_zeros(categories.shape[0], 1), categories + 1], dim=1)  # (B, N + 1)
    return torch.gather(lookup, 1, labels.flatten(1)).view_as(labels)


def cell_targets(cats: torch.Tensor, n_classes: int, grid: int, frame: str, frame_size: int) -> torch.Tensor:
    """(B, H, W) class ids -> (B, grid*grid, n_classes) share of each cell per class, in the model's frame.

    frame 'sam': resized (longest side = frame_size) into the top-left of a square (SAM's padding);
    'pad': centred in a square (LLaVA's pad); 'crop': centre square (CLIP's crop). Only the classes
    present are pooled (a scene has a handful of the 60), then scattered into all classes.
    """
    present = torch.unique(torch.cat([cats.new_zeros(1), cats.flatten()]))  # background always
    planes = (cats[:, None] == present[None, :, None, None]).float()  # (B, P, H, W)
    h, w = cats.shape[-2:]
    if frame == "sam":
        scale = frame_size / max(h, w)
        rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
        planes = F.pad(F.interpolate(planes, (rh, rw), mode="area"), (0, frame_size - rw, 0, frame_size - rh))
        planes[:, 0, rh:, :] = 1.0  # padding is background (class 0 is present[0])
        planes[:, 0, :, rw:] = 1.0
    elif frame == "pad":
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        planes = F.pad(planes, (left, side - w - left, top, side - h - top))
        background = torch.ones(side, side, dtype=torch.bool, device=cats.device)
        background[top:top + h, left:left + w] = False
        planes[:, 0][:, background] = 1.0
    else:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        planes = planes[..., top:top + side, left:left + side]
    pooled = F.adaptive_avg_pool2d(planes, grid).flatten(2).transpose(1, 2)  # (B, grid*grid, P)
    out = pooled.new_zeros(*pooled.shape[:2], n_classes)
    out[..., present] = pooled
    return out


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
