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
MIN_MEAN_IOU = 0.52  # measured 0.596 on these 12 scenes (0.592 before the geometry ranker), 0.455 unrefined
# (v2.1: 0.510; v2 without the gate: 0.342; v1: 0.235)
MIN_KEYWORDS = 9  # of 12; measured 10 (v2.1: 11; v2 without the gate: 7; v1: 9)
MIN_NOT_HERE = 7  # of 12 absent-object queries on the same scenes answered "not here"; measured 8 (v2.1: 10)
MIN_INSTANCES = 11  # of 22 "all the <kind>" queries on test scenes 0-29 with exactly the asked categories; measured 14
# (v2.1: 16; on scenes 0-199 v2.2 gets 81% of them exactly, v2.1 67%: these 22 are a small sample)
MIN_VIDEO_IOU = 0.42  # streamed masks against the true ones, generate_sequence(12, seed=3); measured 0.498
# (0.475 without the refinement; v2.1: 0.456)


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
    assert predictor.reasoner.gate is not None and predictor.reasoner.gate.ranker is not None
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
        if pred.present:
            assert pred.answer == f"Sure, it is the {pred.keyword}."
        else:  # the presence calibration missed it: an answer that says so, and nothing else
            assert pred.answer.startswith("I don't see the") and pred.keyword == "" and not pred.mask.any()
    assert np.mean(ious) >= MIN_MEAN_IOU, ious
    assert right >= MIN_KEYWORDS


def test_default_model_says_not_here_and_finds_each_asked_category():
    """The shipped category detector and presence calibration: absent objects get "not here", and
    "all the <kind>" queries get one instance per asked category (instance share 0.1, as the node's
    instance_mode categories)."""
    from keyseg_core.eval.presence import absent_rng
    from keyseg_core.scenes.eval_queries import absent_query, multi_instance_query
    from keyseg_core.scenes.generator import SPLIT_IDS
    from keyseg_core.scenes.knowledge import load_knowledge

    predictor, kb = Predictor.from_pretrained(), load_knowledge()
    assert predictor.reasoner.gate is not None and predictor.presence.signal == "category"
    not_here = 0
    for i in SCENES:
        sample = make_sample(3, "test", i)
        query = absent_query(sample.scene.objects, kb, absent_rng(3, "test", i), test=True)
        pred = predictor.predict(sample.scene.image, query.text)
        not_here += not pred.present
        assert pred.present or (pred.keyword == "" and not pred.mask.any() and not pred.instances)
    assert not_here >= MIN_NOT_HERE
    predictor.instance_share, right = 0.1, 0
    for i in range(30):
        sample = make_sample(3, "test", i)
        rng = np.random.default_rng([3, SPLIT_IDS["test"], i, 0x1257])
        query = multi_instance_query(sample.scene.objects, kb, rng, test=True)
        if query is not None:
            pred = predictor.predict(sample.scene.image, query.text)
            right += sorted(x.keyword for x in pred.instances) == sorted(query.targets)
    assert right >= MIN_INSTANCES


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
