"""Reading images from disk into the HxWx3 uint8 RGB arrays the predictor takes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from keyseg_core.modeling.processor import validate_image


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; grayscale, palette, RGBA and 16-bit are converted."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                return validate_image(np.asarray(im, dtype=np.uint32).clip(0, 65535).astype(np.uint16), str(path))
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not a readable image ({exc})") from exc


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Write a PNG atomically (temp file, then rename) so a crash never leaves a truncated file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    tmp.replace(path)
