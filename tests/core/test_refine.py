"""Mask refinement (GrabCut seeded by the mask): it pulls a blobby mask onto the object's colour edges,
repeats exactly, leaves what it cannot model alone, and every predictor path applies it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from keyseg_core.inference.refine import MaskRefiner, make_refiner
from keyseg_core.runtime.predictor import Predictor


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def scene(h: int = 240, w: int = 320) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat-coloured star on a noisy textured background; its true mask and a blobby mask of it
    (the star's hull, dilated and shifted, as this SAM draws it)."""
    rng = np.random.default_rng(0)
    image = (rng.normal(0, 12, (h, w, 3)) + np.array([90, 120, 70])).clip(0, 255).astype(np.uint8)
    image[::16] = (40, 60, 30)  # texture lines, so the background is not one colour
    cy, cx, r = h // 2, w // 2, min(h, w) // 4
    angles = np.linspace(0, 2 * np.pi, 11)[:-1]
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    star = np.stack([cx + radii * np.sin(angles), cy - radii * np.cos(angles)], 1).round().astype(np.int32)
    truth = np.zeros((h, w), np.uint8)
    cv2.fillPoly(truth, [star], 1)
    image[truth > 0] = (230, 190, 30)
    blob = np.zeros((h, w), np.uint8)
    cv2.fillPoly(blob, [cv2.convexHull(star)], 1)
    blob = cv2.dilate(blob, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
    blob = np.roll(blob, (4, -5), axis=(0, 1))
    return image, truth > 0, blob > 0


def test_refining_pulls_a_blobby_mask_onto_the_object():
    image, truth, blob = scene()
    refined = MaskRefiner()(image, blob)
    assert iou(blob, truth) < 0.75
    assert iou(refined, truth) > 0.9


def test_a_frame_larger_than_max_side_is_refined_at_that_size_and_returned_at_its_own():
    image, truth, blob = scene(600, 800)
    refined = MaskRefiner(max_side=320)(image, blob)
    assert refined.shape == truth.shape and refined.dtype == bool
    assert iou(refined, truth) > 0.85 > iou(blob, truth)


def test_refining_repeats_exactly_whatever_ran_before():
    image, _, blob = scene()
    refiner = MaskRefiner()
    first = refiner(image, blob)
    refiner(np.ascontiguousarray(image[::-1]), np.ascontiguousarray(blob[::-1]))  # moves OpenCV's RNG
    assert np.array_equal(refiner(image, blob), first)


def test_what_cannot_be_modelled_is_left_as_it_is():
    image, _, blob = scene()
    refiner = MaskRefiner()
    empty = np.zeros_like(blob)
    assert not refiner(image, empty).any()
    tiny = np.zeros_like(blob)
    tiny[10:13, 10:13] = True  # 9 px: fewer than min_pixels
    assert np.array_equal(refiner(image, tiny), tiny)
    everything = np.ones_like(blob)
    assert refiner(image, everything).all()


def test_bad_settings_and_sizes_are_named():
    with pytest.raises(ValueError, match="ring"):
        MaskRefiner(ring=0)
    with pytest.raises(ValueError, match="iterations"):
        MaskRefiner(iterations=0)
    with pytest.raises(ValueError, match="max_side"):
        MaskRefiner(max_side=8)
    with pytest.raises(ValueError, match="refine: 'crf' is not one of grabcut, none"):
        make_refiner("crf")
    image, _, blob = scene()
    with pytest.raises(ValueError, match=r"image \(240, 320\) and mask \(100, 100\)"):
        MaskRefiner()(image, blob[:100, :100])
    with pytest.raises(ValueError, match="refine: 'crf'"):
        Predictor.from_pretrained("config:tiny", refine="crf")


class Recording:
    """A refiner that records the frames it is given and returns the mask's complement, so that the
    test can see each path hand it the right frame and publish what it returns."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        assert image.dtype == np.uint8 and image.shape[:2] == mask.shape
        self.shapes.append(image.shape)
        return ~mask


def test_every_predictor_path_refines_each_mask_on_its_own_frame():
    predictor = Predictor.from_pretrained("config:tiny", refine="none")
    assert predictor.refiner is None and make_refiner("grabcut") == MaskRefiner()
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    gray = image[..., 0]  # a grayscale frame: refined as the validated HxWx3 frame
    plain = predictor.predict(image, "the cup")
    plain_queries = predictor.predict_queries(["the cup", "the bed"], predictor.cache_frame(image))
    reasoning = predictor.reason(image, "the cup")
    plain_segment, _ = predictor.segment(gray, reasoning)
    predictor.refiner = recording = Recording()
    assert np.array_equal(predictor.predict(image, "the cup").mask, ~plain.mask)
    refined = predictor.predict_queries(["the cup", "the bed"], predictor.cache_frame(image))
    assert all(np.array_equal(r.mask, ~p.mask) for r, p in zip(refined, plain_queries))
    segmented, _ = predictor.segment(gray, reasoning)
    assert np.array_equal(segmented.mask, ~plain_segment.mask)
    assert recording.shapes == [(48, 64, 3)] * 4


def test_presence_is_decided_on_the_unrefined_mask_and_not_here_is_not_refined():
    """A presence calibration on the mask's area was fitted on SAM's masks: the refinement must not
    move that decision, and an answer that is "not here" costs no refinement."""
    from keyseg_core.inference.presence import PresenceCalibration

    predictor = Predictor.from_pretrained("config:tiny", refine="none")
    image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    area = float(predictor.predict(image, "the cup").mask.mean())
    assert 0.0 < area < 1.0  # this random model's mask: part of the frame

    def calibration(threshold: float) -> PresenceCalibration:
        return PresenceCalibration("area", threshold, 0.05, "test", 0.0, 0.0, 1.0)

    shapes = []

    def erase(frame: np.ndarray, mask: np.ndarray) -> np.ndarray:  # a refinement that empties the mask
        shapes.append(frame.shape)
        return np.zeros_like(mask)

    predictor.refiner = erase
    predictor.presence = calibration(area / 2)  # SAM's mask is above it, the refined one would not be
    kept = predictor.predict(image, "the cup")
    assert kept.present and not kept.mask.any() and len(shapes) == 1
    predictor.presence = calibration(area)  # SAM's mask is not above it: not here, nothing refined
    gone = predictor.predict(image, "the cup")
    assert not gone.present and not gone.mask.any() and len(shapes) == 1
