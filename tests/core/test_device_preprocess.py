"""Preprocessing on the device (keyseg_core.inference.preprocess) equals the PIL path within
interpolation tolerance: uint8 images at most 2 levels apart, almost all pixels equal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyseg_core.inference.preprocess import FrameUploader, clip_canvas_tensor, clip_pixels, resize_uint8, sam_image
from keyseg_core.inference.reasoner import Reasoner
from keyseg_core.inference.segmenter import Segmenter
from keyseg_core.modeling.processor import CLIP_STD, clip_canvas, preprocess_clip, preprocess_clip_crop
from keyseg_core.modeling.sam import PIXEL_STD, preprocess_sam, resize_for_sam

LEVELS = 2  # most uint8 levels a device-resized pixel may differ from PIL's
MEAN_LEVELS = 0.1  # mean difference in levels (random noise, the worst case for interpolation)


def _frames() -> list[np.ndarray]:
    """Random noise (the worst case: every pixel an edge) and a smooth gradient with a sharp square."""
    noise = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    y, x = np.mgrid[0:60, 0:44]
    smooth = np.stack([x * 5, y * 4, (x + y) * 2], -1).astype(np.uint8)
    smooth[20:40, 10:30] = (250, 10, 128)
    return [noise, smooth]


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype == np.uint8
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= LEVELS and diff.mean() <= MEAN_LEVELS, (diff.max(), diff.mean())


@pytest.mark.parametrize("frame", _frames(), ids=["noise", "smooth"])
@pytest.mark.parametrize("side", [32, 128], ids=["down", "up"])
def test_sam_resize_matches_pil(frame, side):
    _close(resize_uint8(torch.from_numpy(frame), resize_for_sam(frame, side).shape[:2], "bilinear").numpy(),
           resize_for_sam(frame, side))


@pytest.mark.parametrize("frame", _frames(), ids=["noise", "smooth"])
@pytest.mark.parametrize("side", [40, 96], ids=["down", "up"])
@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_clip_canvas_matches_pil(frame, side, mode):
    _close(clip_canvas_tensor(torch.from_numpy(frame), side, mode).numpy(), clip_canvas(frame, side, mode))


def test_sam_input_matches_preprocess_sam():
    frame = _frames()[0]
    want, got = preprocess_sam(frame, 80), sam_image(torch.from_numpy(frame), 80)
    assert (got.resized_hw, got.original_hw) == (want.resized_hw, want.original_hw) == ((60, 80), (48, 64))
    assert got.pixels.shape == want.pixels.shape == (3, 80, 80)
    assert torch.allclose(got.pixels, want.pixels, atol=LEVELS / min(PIXEL_STD) + 1e-6, rtol=0)
    assert torch.equal(got.pixels[:, 60:], want.pixels[:, 60:])  # padding: zeros in both


@pytest.mark.parametrize("mode, reference", [("pad", preprocess_clip), ("crop", preprocess_clip_crop)])
def test_clip_input_matches_preprocess_clip(mode, reference):
    frame = _frames()[1]
    got, want = clip_pixels(torch.from_numpy(frame), 40, mode), reference(frame, 40)
    assert got.shape == want.shape == (3, 40, 40)
    assert torch.allclose(got, want, atol=LEVELS / 255 / min(CLIP_STD) + 1e-6, rtol=0)


def test_uploader_keeps_the_frame_on_the_cpu():
    frame = _frames()[0]
    assert torch.equal(FrameUploader(torch.device("cpu"))(frame), torch.from_numpy(frame))


def test_inference_uses_the_device_path_only_on_cuda(tiny, square_sample):
    """On the CPU the PIL path runs; forced on (as on CUDA), the device path gives the same embedding
    and vision features within the resize tolerance."""
    model, processor = tiny
    image, _ = square_sample
    segmenter, reasoner = Segmenter(model, processor), Reasoner(model, processor)
    assert not segmenter.on_device and not reasoner.on_device
    with torch.inference_mode():
        pil_frame, pil_features = segmenter.encode(image), reasoner.encode_frame(image)
        segmenter.on_device = reasoner.on_device = True
        dev_frame, dev_features = segmenter.encode(image), reasoner.encode_frame(image)
    assert (dev_frame.resized_hw, dev_frame.original_hw) == (pil_frame.resized_hw, pil_frame.original_hw)
    for got, want in ((dev_frame.embedding, pil_frame.embedding), (dev_features.image_features, pil_features.image_features)):
        assert got.shape == want.shape
        assert (got - want).abs().max() <= 0.05 * want.abs().max()
