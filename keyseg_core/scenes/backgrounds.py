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


def _palette(rng: np.random.Generator) -> np.ndarray:
    """256x3 uint8 ramp between two random colours: patterns are drawn as t in [0, 1] and mapped
    through it (one table lookup instead of float colour arithmetic per pixel)."""
    c = rng.integers(0, 256, (2, 3)).astype(np.float32)
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[:, None]
    return np.round(c[0] + (c[1] - c[0]) * ramp).astype(np.uint8)


@lru_cache(maxsize=8)
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    xx, yy = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _pattern(family: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """HxW float32 in [0, 1] for the two-colour families."""
    xx, yy = _grid(width, height)
    theta = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(theta)), np.float32(np.sin(theta))
    u = xx * cos + yy * sin
    if family == "gradient":
        return (u - u.min()) / max(1e-6, float(u.max() - u.min()))
    if family == "stripes":
        return 0.5 + 0.5 * np.sin(u * np.float32(2 * np.pi / rng.uniform(10, 60)))
    v = yy * cos - xx * sin
    if family == "checker":
        cell = np.float32(rng.uniform(12, 48))
        return ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
    if family == "dots":
        spacing = np.float32(rng.uniform(18, 50))
        radius = spacing * np.float32(rng.uniform(0.15, 0.35))
        du, dv = (u % spacing) - spacing / 2, (v % spacing) - spacing / 2
        return (du * du + dv * dv < radius * radius).astype(np.float32)
    if family == "plaid":
        period = rng.uniform(20, 60)
        wx, wy = np.float32(2 * np.pi / period), np.float32(2 * np.pi / (period * 0.8))
        return 0.5 + 0.25 * (np.sin(xx * wx) + np.sin(yy * wy))
    raise ValueError(f"unknown texture family {family!r}")


def _texture(family: str, rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    palette = _palette(rng)
    if family == "noise":  # value noise: a small random colour grid, upsampled smoothly
        gw, gh = int(rng.integers(3, 12)), int(rng.integers(3, 10))
        small = rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8)
        img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    elif family == "solid":
        img = np.broadcast_to(palette[0], (height, width, 3))
    else:
        t = _pattern(family, rng, width, height)
        img = palette[(t * np.float32(255) + np.float32(0.5)).astype(np.uint8)]
    # grey pixel noise, uniform in +-amplitude (cheap to draw; saturating add)
    amplitude = int(rng.integers(3, 21))
    noise = rng.integers(-amplitude, amplitude + 1, (height, width), dtype=np.int16)
    return cv2.add(np.ascontiguousarray(img), cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)


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
