"""The shipped KeySeg-Tiny: verified by checksum, small, the default of Predictor and `keyseg predict`,
and it segments held-out generated scenes (test split: held-out backgrounds and phrasings)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from keyseg_core.cli import app as cli
from keyseg_core.inference.image_io import load_image, save_png
from keyseg_core.inference.stream import StreamingSegmenter
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence, make_sample
from keyseg_core.weights.shipped import CHECKSUM_FILE, SHIPPED_DIR, shipped_checkpoint

MAX_MB = 30
SCENES = range(12)  # test split, seed 3 as in the README's evaluation; its first 12 scenes
# Floors a little under what the shipped model measured on these fixed inputs (README: KeySeg-Tiny):
MIN_MEAN_IOU = 0.28  # measured 0.342 on these 12 scenes (v1: 0.235)
MIN_KEYWORDS = 6  # of 12; measured 7 (v1: 9)
MIN_VIDEO_IOU = 0.33  # streamed masks against the true ones, generate_sequence(12, seed=3); measured 0.415


def target_mask(sample) -> np.ndarray:
    index = [o.category for o in sample.scene.objects].index(sample.keyword)
    return sample.scene.labels == index + 1


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained()


def test_shipped_files_match_their_checksums_and_stay_small():
    assert shipped_checkpoint() == SHIPPED_DIR
    size = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert size < MAX_MB * 2**20


def test_a_changed_byte_is_named(tmp_path, monkeypatch):
    copy = tmp_path / "keyseg-tiny"
    shutil.copytree(SHIPPED_DIR, copy)
    weights = copy / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr("keyseg_core.weights.shipped.SHIPPED_DIR", copy)
    with pytest.raises(ValueError, match=f"trainable.safetensors.*does not match {CHECKSUM_FILE}"):
        Predictor.from_pretrained()


def test_default_model_is_trained_with_an_open_keyword_set(predictor):
    assert not predictor.untrained
    vocabulary = predictor.model.config.keyword.vocabulary
    assert {"bed", "ladder", "potted plant", "teddy bear"} <= set(vocabulary)


def test_default_model_segments_held_out_scenes(predictor):
    ious, right = [], 0
    for i in SCENES:
        sample = make_sample(3, "test", i)
        query = sample.queries[0]
        pred = predictor.predict(sample.scene.image, query.text)
        ious.append(iou(pred.mask, target_mask(sample)))
        right += pred.keyword == sample.keyword
        assert pred.answer == f"Sure, it is the {pred.keyword}."
    assert np.mean(ious) >= MIN_MEAN_IOU, ious
    assert right >= MIN_KEYWORDS


def test_predict_without_a_model_uses_the_shipped_one(tmp_path, capsys):
    sample = make_sample(3, "test", 4)  # "Which fruit is above the mouse?" (apple)
    save_png(tmp_path / "scene.png", sample.scene.image)
    code = cli.main(["predict", "--image", str(tmp_path / "scene.png"), "--query", sample.queries[0].text,
                     "--out", str(tmp_path / "out")])
    assert code == 0
    out = capsys.readouterr().out
    assert "untrained" not in out and sample.keyword in out
    mask = load_image(tmp_path / "out" / "scene_mask.png")[..., 0] > 127
    assert iou(mask, target_mask(sample)) >= 0.45


def test_streaming_keeps_the_target_on_a_moving_sequence(predictor):
    """Reason once on the first frame, SAM only afterwards: the masks follow the moving target."""
    video = generate_sequence(12, seed=3)
    stream = StreamingSegmenter(predictor)
    stream.set_query(video.texts[0])
    ious = [iou(stream.step(f, now=i / 30).prediction.mask, m.astype(bool))
            for i, (f, m) in enumerate(zip(video.frames, video.masks))]
    assert np.mean(ious) >= MIN_VIDEO_IOU, ious
