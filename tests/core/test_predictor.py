"""Predictor on real photos, image conversions, and bad-input errors."""

import numpy as np
import pytest
from skimage import data

from keyseg_core.inference.results import STAGES
from keyseg_core.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("config:tiny")


def test_real_photo_gives_mask_of_photo_size(predictor):
    photo = data.coffee()  # 400x600 RGB photograph
    pred = predictor.predict(photo, "Which object holds the drink?")
    assert pred.mask.shape == photo.shape[:2] and pred.mask.dtype == bool
    assert 0.0 <= pred.score <= 1.0
    assert pred.keyword == pred.keyword_topk[0].text and len(pred.keyword_topk) == 5
    assert pred.keyword_topk[0].prob >= pred.keyword_topk[-1].prob
    assert pred.answer == f"Sure, it is the {pred.keyword}."  # readable, no [SEG]/[KEY]
    assert set(pred.timings_ms) == set(STAGES) | {"total"}
    assert pred.untrained  # a registry config is random-init and says so
    if pred.mask.any():
        x0, y0, x1, y1 = pred.box
        assert pred.mask[y0:y1, x0:x1].sum() == pred.mask.sum()


def test_batch_matches_single(predictor):
    a, b = data.astronaut(), data.chelsea()
    batch = predictor.predict_batch([a, b], ["the person", "the cat"])
    assert [p.mask.shape for p in batch] == [a.shape[:2], b.shape[:2]]
    single = predictor.predict(b, "the cat")
    assert single.keyword == batch[1].keyword


@pytest.mark.parametrize(
    "image",
    [
        data.camera(),  # grayscale uint8
        np.dstack([data.astronaut(), np.full(data.astronaut().shape[:2], 255, np.uint8)]),  # RGBA
        (data.astronaut().astype(np.uint16) * 257),  # 16-bit
    ],
    ids=["gray", "rgba", "uint16"],
)
def test_converted_images(predictor, image):
    assert predictor.predict(image, "the main object").mask.shape == image.shape[:2]


@pytest.mark.parametrize(
    "image, query, message",
    [
        (np.zeros((8, 8, 3), np.float32), "x", "dtype float32"),
        (np.zeros((8, 8, 2), np.uint8), "x", "shape"),
        (np.zeros((0, 8, 3), np.uint8), "x", "empty image"),
        ("not an array", "x", "numpy array"),
        (np.zeros((8, 8, 3), np.uint8), "   ", "non-empty"),
        (np.zeros((8, 8, 3), np.uint8), "", "non-empty"),
        (np.zeros((8, 8, 3), np.uint8), "why " * 3000, "exceed the context"),
    ],
)
def test_bad_input_is_refused_with_reason(predictor, image, query, message):
    with pytest.raises(ValueError, match=message):
        predictor.predict(image, query)


def test_generate_mode_returns_text_and_mask():
    pred = Predictor.from_pretrained("config:tiny", mode="generate").predict(data.chelsea(), "the cat")
    assert isinstance(pred.answer, str) and pred.mask.shape == data.chelsea().shape[:2]


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(model="config:huge"), ValueError, "unknown model config"),
        (dict(model="/no/such/dir"), FileNotFoundError, "neither a checkpoint"),
        (dict(model="config:tiny", dtype="int8"), ValueError, "dtype"),
        (dict(model="config:tiny", mode="beam"), ValueError, "mode"),
    ],
)
def test_bad_model_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        Predictor.from_pretrained(**kwargs)


def test_directory_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a keyseg checkpoint"):
        Predictor.from_pretrained(str(tmp_path))
