"""Scene backgrounds: scikit-image's bundled photos (no download) and procedural textures.

Some photos and two texture families are held out: the test split uses only those, train/val
only the others, so test measures segmentation on unseen backgrounds. Photos that show something a
query could mean are not used at all: a real cat behind an emoji cat would make "the cat"
ambiguous, a real rocket "the vehicle". Excluded: chelsea/cat (a cat), coffee (a cup), clock,
stereo_motorcycle, rocket (a vehicle), astronaut (spacesuit, helmet, space shuttle) and camera
(a camera, a coat).
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

# skimage.data loaders that read files shipped in the wheel (checked offline; no pooch download)
PHOTOS_OPEN = ("brick", "grass", "moon", "page", "text", "cell", "retina", "colorwheel")
PHOTOS_HELD_OUT = ("coins", "gravel", "immunohistochemistry", "hubble_deep_field")
TEXTURES_OPEN = ("gradient", "noise", "stripes", "checker", "solid")
TEXTURES_HELD_OUT = ("dots", "plaid")
PHOTO_PROBABILITY = 0.5


def background_names(split: str) -> tuple[str, ...]:
    """Backgrounds a split may use: test only the held-out ones, train/val only the others."""
    photos, textures = (
        (PHOTOS_HELD_OUT, TEXTURES_HELD_OUT) if split == "test" else (PHOTOS_OPEN, TEXTURES_OPEN)
    )
    return tuple(f"photo:{p}" for p in photos) + tuple(f"texture:{t}" for t in textures)


@lru_cache(maxsize=None)
def photo(name: str) -> np.ndarray:
    """HxWx3 uint8 photo from skimage.data (grayscale becomes RGB, alpha dropped)."""
    try:
        import skimage.data
    except ImportError as exc:
        raise RuntimeError("background photos need scikit-image: pip install 'keyseg[scenes]'") from exc
    if name not in PHOTOS_OPEN + PHOTOS_HELD_OUT:
        raise ValueError(f"unknown background photo {name!r}")
    image = np.asarray(getattr(skimage.data, name)())
    if image.dtype != np.uint8:
        raise ValueError(f"skimage.data.{name} is not uint8")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = np.ascontiguousarray(image[..., :3])
    image.setflags(write=False)
    return image


@lru_cache(maxsize=64)
def _photo_for(name: str, width: int, height: int) -> np.ndarray:
    """The photo shrunk (never enlarged) so it covers twice the target size: crops stay sharp and
    resizing them stays cheap."""
    src = photo(name)
    sh, sw = src.shape[:2]
    factor = max(2 * width / sw, 2 * height / sh)
    if factor >= 1:
        return src
    size = (max(1, int(round(sw * factor))), max(1, int(round(sh * factor))))
    out = cv2.resize(src, size, interpolation=cv2.INTER_AREA)
    out.setflags(write=False)
    return out


def _photo_crop(name: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Random crop of the photo (40-100 % of the largest crop with the target's aspect), resized, maybe mirrored."""
    src = _photo_for(name, width, height)
    sh, sw = src.shape[:2]
    aspect = width / height
    max_w = min(sw, int(sh * aspect))
    crop_w = max(8, int(max_w * rng.uniform(0.4, 1.0)))
    crop_h = max(8, min(sh, int(round(crop_w / aspect))))
    x = int(rng.integers(0, sw - crop_w + 1))
    y = int(rng.integers(0, sh - crop_h + 1))
    crop = src[y : y + crop_h, x : x + crop_w]
    interp = cv2.INTER_AREA if crop_w > width else cv2.INTER_LINEAR
    out = cv2.resize(crop, (width, height), interpolation=interp)
    return np.ascontiguousarray(out[:, ::-1]) if rng.random() < 0.5 else out


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, (n, 3)).astype(np.float32)


def _blend(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel mix of two colours by t (HxW in [0, 1])."""
    return a + (b - a) * t[..., None]


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _texture(family: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    xx, yy = _grid(width, height)
    c = _colours(rng, 2)
    theta = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = xx * cos + yy * sin
    v = yy * cos - xx * sin
    if family == "gradient":
        t = (u - u.min()) / max(1e-6, float(u.max() - u.min()))
        img = _blend(c[0], c[1], t)
    elif family == "noise":  # value noise: a small random colour grid, upsampled smoothly
        gw, gh = int(rng.integers(3, 12)), int(rng.integers(3, 10))
        small = rng.integers(0, 256, (gh, gw, 3)).astype(np.float32)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    elif family == "stripes":
        period = rng.uniform(10, 60)
        img = _blend(c[0], c[1], 0.5 + 0.5 * np.sin(2 * np.pi * u / period))
    elif family == "checker":
        cell = rng.uniform(12, 48)
        t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        img = _blend(c[0], c[1], t)
    elif family == "solid":
        img = np.broadcast_to(c[0], (height, width, 3)).astype(np.float32)
    elif family == "dots":
        spacing = rng.uniform(18, 50)
        radius = spacing * rng.uniform(0.15, 0.35)
        du, dv = (u % spacing) - spacing / 2, (v % spacing) - spacing / 2
        img = _blend(c[0], c[1], (du * du + dv * dv < radius * radius).astype(np.float32))
    elif family == "plaid":
        period = rng.uniform(20, 60)
        band = 0.5 + 0.25 * (np.sin(2 * np.pi * xx / period) + np.sin(2 * np.pi * yy / (period * 0.8)))
        img = _blend(c[0], c[1], band)
    else:
        raise ValueError(f"unknown texture family {family!r}")
    noise = rng.standard_normal((height, width, 1), dtype=np.float32) * np.float32(rng.uniform(2, 12))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_background(name: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """HxWx3 uint8 background for a name from background_names()."""
    source, _, item = name.partition(":")
    if source == "photo":
        return _photo_crop(item, rng, width, height)
    if source == "texture":
        return _texture(item, rng, width, height)
    raise ValueError(f"unknown background {name!r}")


def sample_background(rng: np.random.Generator, split: str, width: int, height: int) -> tuple[str, np.ndarray]:
    """(name, image): a photo with probability PHOTO_PROBABILITY, else a texture, from the split's pool."""
    prefix = "photo:" if rng.random() < PHOTO_PROBABILITY else "texture:"
    pool = [n for n in background_names(split) if n.startswith(prefix)]
    name = pool[int(rng.integers(len(pool)))]
    return name, make_background(name, rng, width, height)
