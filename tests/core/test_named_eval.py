"""`keyseg eval-named`: whether a mask lands on the object its own keyword names, checked against
answers built from the generated scenes' true masks (the metric, not a model, is under test)."""

from __future__ import annotations

from types import SimpleNamespace

from keyseg_core.cli import app as cli
from keyseg_core.eval.named import named_report
from keyseg_core.scenes.generator import make_sample

SCENES = 4


class Answers:
    """A stand-in predictor answering scene i with a chosen object's true mask and a chosen keyword."""

    def __init__(self, pick):
        self.pick, self.index = pick, 0

    def predict(self, image, query):
        sample = make_sample(3, "test", self.index)
        self.index += 1
        categories = [o.category for o in sample.scene.objects]
        mask_of, keyword = self.pick(sample.keyword, categories)
        return SimpleNamespace(mask=sample.scene.labels == categories.index(mask_of) + 1, keyword=keyword)


def other(target, categories):
    return next(c for c in categories if c != target)


def test_a_right_answer_is_on_its_named_object_and_the_target():
    report = named_report(Answers(lambda t, cs: (t, t)), 3, "test", SCENES, progress=False)["all"]
    assert report == {"queries": SCENES, "target_iou": 1.0, "keyword_names_an_object": SCENES,
                      "named_iou": 1.0, "on_named": 1.0, "both_right": 1.0}


def test_the_right_keyword_over_another_objects_mask_is_caught():
    report = named_report(Answers(lambda t, cs: (other(t, cs), t)), 3, "test", SCENES, progress=False)["all"]
    assert report["on_named"] == 0.0 and report["both_right"] == 0.0 and report["target_iou"] == 0.0


def test_a_wrong_keyword_with_its_own_mask_is_on_named_but_not_right():
    report = named_report(Answers(lambda t, cs: (other(t, cs), other(t, cs))), 3, "test", SCENES, progress=False)
    assert report["all"]["on_named"] == 1.0 and report["all"]["both_right"] == 0.0
    assert sum(s["queries"] for s in report["by_type"].values()) == SCENES


def test_a_keyword_naming_nothing_in_the_scene_is_counted_apart():
    report = named_report(Answers(lambda t, cs: (t, "unicorn")), 3, "test", SCENES, progress=False)["all"]
    assert report["keyword_names_an_object"] == 0 and report["named_iou"] is None and report["on_named"] is None


def test_cli_refuses_an_unknown_split_by_name(capsys):
    assert cli.main(["eval-named", "--checkpoint", "config:tiny", "--split", "holdout", "--scenes", "1"]) == 2
    assert "keyseg eval-named: error: split: 'holdout' is not one of train, val, test" in capsys.readouterr().err


def test_cli_prints_the_table_for_a_model(capsys, tmp_path):
    assert cli.main(["eval-named", "--checkpoint", "config:tiny", "--scenes", "2", "--no-progress",
                     "--json", str(tmp_path / "named.json")]) == 0
    out = capsys.readouterr().out
    assert "| all | 2 |" in out and (tmp_path / "named.json").is_file()
