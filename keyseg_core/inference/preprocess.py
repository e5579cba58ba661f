"""Frame preprocessing on the model's device: upload the uint8 frame once, then resize, normalise and
pad there, for SAM and for the CLIP vision tower.

Why: on a GPU the CPU (PIL) path costs 15-17 ms a 640x480 frame for work of almost no arithmetic,
the largest cost of a streamed frame. The PIL path stays the reference and the CPU's path
(`sam.preprocess_sam`, `processor.preprocess_clip`); this one reproduces it: antialiased resizes
(PIL's filters: bilinear for SAM, bicubic with a = -0.5 for CLIP, which is what
`F.interpolate(antialias=True)` implements), done as PIL does them, width first, then height, each
pass rounded half up to uint8 as PIL rounds, so the uint8 images differ from PIL's by at most 2
levels, by under 0.1 level on average (tests/core/test_device_preprocess.py), and the same `normalise_pad_sam` / `normalise_clip` follow.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from keyseg_core.modeling.processor import CLIP_MEAN, normalise_clip
from keyseg_core.modeling.sam import SamImage, normalise_pad_sam, resized_shape


def placement(model: torch.nn.Module) -> tuple[torch.device, torch.dtype, bool, FrameUploader]:
    """(device, dtype, on_device, uploader) of a model's half: on CUDA a frame is preprocessed on the
    GPU (this module); on the CPU by PIL, the reference path."""
    param = next(model.parameters())
    return param.device, param.dtype, param.device.type == "cuda", FrameUploader(param.device)


class FrameUploader:
    """HxWx3 uint8 numpy frames -> uint8 tensors on `device`. On CUDA through a reused pinned host
    buffer and a non-blocking copy; the next frame waits only for the previous copy to finish
    before it overwrites the buffer."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        host = torch.from_numpy(image)
        if self.device.type != "cuda":
            return host.to(self.device)
        if self._pinned is None or self._pinned.shape != host.shape:
            self._pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            self._copied = None
        if self._copied is not None:
            self._copied.synchronize()
        self._pinned.copy_(host)
        frame = self._pinned.to(self.device, non_blocking=True)
        self._copied = torch.cuda.Event()
        self._copied.record()
        return frame


def resize_uint8(frame: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """(H, W, 3) uint8 -> (h, w, 3) uint8, antialiased `mode` ('bilinear' or 'bicubic') as PIL
    resamples: the width pass, rounded half up to uint8, then the height pass, rounded."""
    x = frame.movedim(-1, 0)[None].float()
    for step in ((x.shape[-2], size[1]), size):
        if tuple(x.shape[-2:]) != tuple(step):
            x = F.interpolate(x, size=step, mode=mode, antialias=True, align_corners=False).add_(0.5).floor_().clamp_(0, 255)
    return x[0].movedim(0, -1).to(torch.uint8)


def sam_image(frame: torch.Tensor, image_size: int) -> SamImage:
    """`preprocess_sam` of a (H, W, 3) uint8 frame on its device."""
    h, w = frame.shape[:2]
    resized = resize_uint8(frame, resized_shape(h, w, image_size), "bilinear")
    return SamImage(normalise_pad_sam(resized, image_size), tuple(resized.shape[:2]), (h, w))


def clip_canvas_tensor(frame: torch.Tensor, size: int, mode: str = "pad") -> torch.Tensor:
    """`processor.clip_canvas` of a (H, W, 3) uint8 frame on its device: (s, s, 3) uint8."""
    h, w = frame.shape[:2]
    if mode == "crop":
        short, long = (w, h) if w <= h else (h, w)
        new_long = int(size * long / short)
        new_h, new_w = (new_long, size) if w <= h else (size, new_long)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        return resize_uint8(frame, (new_h, new_w), "bicubic")[top: top + size, left: left + size]
    side = max(h, w)
    fill = torch.tensor([int(round(m * 255)) for m in CLIP_MEAN], dtype=torch.uint8, device=frame.device)
    canvas = fill.expand(side, side, 3).clone()
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top: top + h, left: left + w] = frame
    return resize_uint8(canvas, (size, size), "bicubic")


def clip_pixels(frame: torch.Tensor, size: int, mode: str = "pad") -> torch.Tensor:
    """`processor.preprocess_clip` / `preprocess_clip_crop` of a (H, W, 3) uint8 frame on its device."""
    return normalise_clip(clip_canvas_tensor(frame, size, mode))
