"""Overlay drawing shared by the CLI and the ROS node: mask tinted and outlined, keyword written."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

TINT = (255, 64, 32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with at least one 4-neighbour outside it."""
    m = mask.astype(bool)
    inner = m.copy()
    inner[1:, :] &= m[:-1, :]
    inner[:-1, :] &= m[1:, :]
    inner[:, 1:] &= m[:, :-1]
    inner[:, :-1] &= m[:, 1:]
    return m & ~inner


def overlay(image: np.ndarray, mask: np.ndarray, label: str | None = None, alpha: float = 0.45) -> np.ndarray:
    """HxWx3 uint8 image + HxW bool mask -> HxWx3 uint8 with the mask tinted, outlined and labelled."""
    if mask.shape != image.shape[:2]:
        raise ValueError(f"overlay: mask {mask.shape} does not match image {image.shape[:2]}")
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.asarray(TINT, np.float32)
    out = out.astype(np.uint8)
    out[mask_outline(m)] = TINT
    if label:
        pil = Image.fromarray(out)
        draw = ImageDraw.Draw(pil)
        font = ImageFont.load_default()
        x0, y0, x1, y1 = draw.textbbox((4, 4), label, font=font)
        draw.rectangle((x0 - 2, y0 - 2, x1 + 2, y1 + 2), fill=(0, 0, 0))
        draw.text((4, 4), label, fill=TINT, font=font)
        out = np.asarray(pil)
    return out
