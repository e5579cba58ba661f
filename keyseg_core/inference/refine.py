"""Mask refinement: a colour model of the frame snaps a mask to the object's edges (GrabCut).

SAM's masks come from a 4x-upsampled low-resolution map; KeySeg-Tiny's from-scratch SAM draws them
blobby, spilling past thin parts and onto the background. GrabCut (OpenCV) fits Gaussian-mixture
colour models to the object and to the rest of the frame, seeded by the mask: the mask is "probably
the object", a ring around it "probably background", everything else background, and a graph cut
relabels the mask and the ring along colour edges. It reshapes the mask it is given; it cannot move
a mask onto another object, and an empty mask stays empty. Not in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REFINE_METHODS = ("grabcut", "none")


@dataclass(frozen=True)
class MaskRefiner:
    """GrabCut seeded by a mask. The defaults were chosen on generated val scenes (docs/results.md)."""

    ring: float = 0.25  # width of the "probably background" ring, a share of the mask box's longer side
    iterations: int = 1  # GrabCut's own iterations (more changed nothing on val)
    max_side: int = 320  # larger frames are refined at this size: the cost grows with the pixels
    min_pixels: int = 16  # smaller masks are left as they are (too few pixels for a colour model)
    seed: int = 0  # OpenCV's RNG seed before each call: GrabCut's k-means start, so results repeat

    def __post_init__(self) -> None:
        if not 0.0 < self.ring <= 1.0:
            raise ValueError(f"mask refiner: ring {self.ring} must be in (0, 1]")
        if self.iterations < 1:
            raise ValueError(f"mask refiner: iterations {self.iterations} must be at least 1")
        if self.max_side < 16:
            raise ValueError(f"mask refiner: max_side {self.max_side} must be at least 16")

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB frame, HxW bool mask -> the refined HxW bool mask (the mask itself when it or
        what is left of the frame is too small for a colour model, or GrabCut would empty it)."""
        if image.shape[:2] != mask.shape:
            raise ValueError(f"mask refiner: image {image.shape[:2]} and mask {mask.shape} differ in size")
        if mask.sum() < self.min_pixels or (~mask).sum() < self.min_pixels:
            return mask
        h, w = mask.shape
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:  # refine a smaller copy, then bring the result back to the frame's size
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            seed = cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5
            if not seed.any():
                return mask
            refined = self._grabcut(small, seed)
            refined = cv2.resize(refined.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
        else:
            refined = self._grabcut(image, mask)
        return refined if refined.any() else mask

    def _grabcut(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero(mask)
        side = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        r = max(3, int(self.ring * side))
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        near = cv2.dilate(mask.astype(np.uint8), disk) > 0
        labels = np.full(mask.shape, cv2.GC_BGD, np.uint8)
        labels[near] = cv2.GC_PR_BGD
        labels[mask] = cv2.GC_PR_FGD
        cv2.setRNGSeed(self.seed)
        background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
        # RGB as it is: the colour models and the edge weights do not depend on the channels' order
        cv2.grabCut(np.ascontiguousarray(image), labels, None, background, foreground,
                    self.iterations, cv2.GC_INIT_WITH_MASK)
        return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def make_refiner(method: str) -> MaskRefiner | None:
    """A refiner by name: 'grabcut' (the default settings) or 'none'."""
    if method not in REFINE_METHODS:
        raise ValueError(f"refine: '{method}' is not one of {', '.join(REFINE_METHODS)}")
    return MaskRefiner() if method == "grabcut" else None
