"""Small file helpers shared by the readers and the keyword builder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keyseg_core.data.errors import DatasetError


def read_text(path: Path, record: object = "-") -> str:
    """Decode as UTF-8, falling back to cp1252: some released ReasonSeg JSONs are not UTF-8."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(path, record, "missing_file", "file not found") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError as exc:
            raise DatasetError(path, record, "bad_encoding", f"neither UTF-8 nor cp1252: {exc}") from exc


def read_json(path: Path, record: object = "-") -> Any:
    """Parse a JSON file; a corrupt or truncated file raises a DatasetError naming it."""
    text = read_text(path, record)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, record, "bad_json", f"invalid JSON: {exc}") from exc


def load_rgb(path: Path, record: object = "-") -> np.ndarray:
    """HxWx3 uint8 RGB; grayscale/palette/CMYK images are converted, EXIF rotation applied.

    EXIF rotation is applied because the annotation tools (labelme) and LISA's cv2.imread do the
    same, so polygons line up with the rotated pixels.
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(path, record, "missing_image", "image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(path, record, "bad_image", f"cannot decode image: {exc}") from exc


def image_size(path: Path, record: object = "-") -> tuple[int, int]:
    """(height, width) after EXIF rotation, reading only the header."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)
    except FileNotFoundError as exc:
        raise DatasetError(path, record, "missing_image", "image file not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(path, record, "bad_image", f"cannot read image header: {exc}") from exc
    # orientations 5-8 swap the axes
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)
