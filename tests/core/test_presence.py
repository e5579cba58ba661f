"""Presence ("not here"): the calibration arithmetic, its file, the predictor applying it, absent queries,
and `keyseg eval-presence` end to end on a small model."""

import json

import numpy as np
import pytest

from keyseg_core.cli.app import main
from keyseg_core.inference.results import Prediction
from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.weights.checkpoint import save_checkpoint
from keyseg_core.inference.presence import (PRESENCE_FILE, PresenceCalibration, calibrate, not_here, rates, roc_auc,
                                  signals, threshold_for_miss)
from keyseg_core.scenes.eval_queries import absent_query
from keyseg_core.scenes.generator import make_sample
from keyseg_core.scenes.knowledge import load_knowledge
from keyseg_core.scenes.queries import resolve


def _prediction(mask: np.ndarray, score: float) -> Prediction:
    return Prediction(mask=mask, score=score, keyword="cup", keyword_prob=0.7, keyword_topk=[], answer="Sure, it is the cup.",
                      box=(0, 0, 1, 1))


def test_signals_of_a_mask():
    mask = np.zeros((10, 10), bool)
    mask[:5, :4] = True
    s = signals(_prediction(mask, 0.8))
    assert s == pytest.approx({"area": 0.2, "score": 0.8, "mass": 0.16})


def test_threshold_keeps_misses_under_the_rate():
    present = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    for max_miss, misses in ((0.0, 0), (0.05, 0), (0.1, 1), (0.25, 2)):
        t = threshold_for_miss(present, max_miss)
        assert (present <= t).sum() == misses
    t = threshold_for_miss(np.array([0.0, 0.0, 0.0, 0.5]), 0.5)  # ties: never more misses than allowed
    assert (np.array([0.0, 0.0, 0.0, 0.5]) <= t).sum() <= 2


def test_auc_and_rates():
    assert roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert rates(np.array([0.1, 0.5]), np.array([0.0, 0.6]), 0.2) == (0.5, 0.5)


def test_calibrate_picks_the_signal_that_separates():
    rng = np.random.default_rng(0)
    present = {"area": rng.uniform(0.02, 0.2, 200), "score": rng.uniform(0, 1, 200), "mass": rng.uniform(0, 1, 200)}
    absent = {"area": rng.uniform(0.0, 0.01, 200), "score": rng.uniform(0, 1, 200), "mass": rng.uniform(0, 1, 200)}
    chosen = calibrate(present, absent, 0.05, "synthetic")
    assert chosen.signal == "area" and chosen.false_positive_rate == 0.0 and chosen.miss_rate <= 0.05


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = PresenceCalibration("mass", 0.01, 0.05, "generated val", 0.04, 0.1, 0.9)
    cal.save(tmp_path / PRESENCE_FILE)
    assert PresenceCalibration.load(tmp_path / PRESENCE_FILE) == cal
    (tmp_path / "bad.json").write_text(json.dumps({"signal": "area"}))
    with pytest.raises(ValueError, match="bad.json: not a presence calibration"):
        PresenceCalibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="presence signal: 'colour'"):
        PresenceCalibration("colour", 0.0, 0.05, "", 0, 0, 0)


def test_not_here_empties_the_answer():
    pred = not_here(_prediction(np.ones((4, 4), bool), 0.9))
    assert not pred.present and not pred.mask.any() and pred.box is None and pred.score == 0.0
    assert pred.keyword == "" and pred.answer == "I don't see the cup here."


def test_predictor_applies_the_checkpoint_calibration(tmp_path):
    model, _ = build_model(registry_config("tiny"))
    save_checkpoint(model, tmp_path / "ckpt")
    image = np.full((48, 64, 3), 90, np.uint8)
    plain = Predictor.from_pretrained(str(tmp_path / "ckpt"))
    assert plain.presence is None and plain.predict(image, "the cup").present
    # a threshold no mask reaches: every answer is "not here"
    PresenceCalibration("area", 1.0, 0.05, "test", 0.0, 0.0, 1.0).save(tmp_path / "ckpt" / PRESENCE_FILE)
    calibrated = Predictor.from_pretrained(str(tmp_path / "ckpt"))
    pred = calibrated.predict(image, "the cup")
    assert not pred.present and not pred.mask.any() and pred.keyword == ""
    assert Predictor.from_pretrained(str(tmp_path / "ckpt"), presence=False).predict(image, "the cup").present


@pytest.mark.parametrize("split,index", [("test", 0), ("val", 3), ("train", 7)])
def test_absent_query_names_nothing_in_the_scene(split, index):
    kb = load_knowledge()
    objects = make_sample(5, split, index).scene.objects
    query = absent_query(objects, kb, np.random.default_rng(index), test=split == "test")
    assert query.spec.target not in {o.category for o in objects}
    resolution = resolve(query.spec, objects, kb)
    assert not resolution.matches and not resolution.ambiguous
    again = absent_query(objects, kb, np.random.default_rng(index), test=split == "test")
    assert again.text == query.text


def test_eval_presence_command(tmp_path, capsys):
    save = tmp_path / "presence.json"
    report = tmp_path / "report.json"
    assert main(["eval-presence", "--checkpoint", "config:tiny", "--scenes", "2", "--no-progress",
                 "--json", str(report), "--save", str(save)]) == 0
    out = capsys.readouterr().out
    assert "| signal | val AUC |" in out
    data = json.loads(report.read_text())
    assert data["measured_on"] == "generated test, seed 3, scenes 0-1" and set(data["signals"]) == {"area", "score", "mass"}
    assert PresenceCalibration.load(save).signal == data["signal"]
    assert main(["eval-presence", "--checkpoint", "config:tiny", "--scenes", "2", "--save", str(save)]) == 2
    assert "exists" in capsys.readouterr().err
