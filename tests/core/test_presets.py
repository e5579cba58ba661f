"""The preset rule, the same in every config: an explicit switch wins over a default, a switch next to a
preset must agree with it (the error names both keys), and a later config layer wins over an earlier one."""

import pytest
import yaml

from keyseg_core.config.model import KeySegConfig
from keyseg_core.config.presets import layer_section
from keyseg_core.train.stage2.config import TrainConfig


def test_an_explicit_weight_is_kept_without_a_preset():
    loss = KeySegConfig.from_dict({"loss": {"bce": 2.0}}).loss  # the example: kept 1.0 before
    assert (loss.preset, loss.ce, loss.bce, loss.dice, loss.keyword) == (None, 1.0, 2.0, 1.0, 1.0)
    fusion = KeySegConfig.from_dict({"fusion": {"residual": False}}).fusion
    assert (fusion.use_key, fusion.cross_attn, fusion.self_attn, fusion.residual) == (True, True, True, False)


@pytest.mark.parametrize("section, data", [
    ("loss", {"preset": "paper", "bce": 2.0}),
    ("fusion", {"preset": "keyseg", "residual": False}),
])
def test_a_switch_that_contradicts_its_preset_names_both_keys(section, data):
    with pytest.raises(ValueError) as info:
        KeySegConfig.from_dict({section: data})
    message = str(info.value)
    key = next(k for k in data if k != "preset")
    assert f"{section}.{key}" in message and f"{section}.preset" in message


def test_agreeing_values_and_round_trip():
    config = KeySegConfig.from_dict({"loss": {"preset": "lisa", "bce": 2.0}, "fusion": {"preset": "seg_only"}})
    assert (config.loss.bce, config.loss.dice, config.fusion.use_key) == (2.0, 0.5, False)
    assert KeySegConfig.from_dict(config.to_dict()) == config


def test_later_layer_wins_and_keeps_the_rest_of_the_earlier_preset():
    assert layer_section("loss", {"preset": "lisa"}, {"bce": 3.0}) == {
        "preset": None, "ce": 1.0, "bce": 3.0, "dice": 0.5, "keyword": 1.0}
    resolved = KeySegConfig().to_dict()["fusion"]  # a registry base: every switch spelled out
    assert layer_section("fusion", resolved, {"preset": "ca_only"})["preset"] == "ca_only"
    assert "use_key" not in layer_section("fusion", resolved, {"preset": "ca_only"})


def test_same_rule_across_base_files_set_and_model_overrides(tmp_path):
    base = {"model": "tiny", "data": [{"name": "reasonseg", "root": "/d"}],
            "model_overrides": {"loss": {"preset": "lisa"}, "fusion": {"preset": "keyseg"}}}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "base.yaml", "model_overrides": {"loss": {"dice": 0.25}}}))
    loss = TrainConfig.from_file(child).model_config().loss
    assert (loss.bce, loss.dice) == (2.0, 0.25)  # child's dice wins, lisa's bce stays
    loss = TrainConfig.from_file(tmp_path / "base.yaml", ["model_overrides.loss.bce=3"]).model_config().loss
    assert (loss.bce, loss.dice) == (3.0, 0.5)
    fusion = TrainConfig.from_file(tmp_path / "base.yaml", ["model_overrides.fusion.preset=seg_only"]).model_config().fusion
    assert (fusion.use_key, fusion.cross_attn) == (False, False)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**base, "model_overrides": {"loss": {"preset": "lisa", "bce": 9.0}}}))
    with pytest.raises(ValueError, match=r"loss\.bce.*loss\.preset"):
        TrainConfig.from_file(bad)
