import pytest

from keyseg_core.config.model import KeySegConfig
from keyseg_core.config.presets import FUSION_PRESETS


def test_round_trip_json(tmp_path):
    cfg = KeySegConfig()
    cfg.to_json(tmp_path / "c.json")
    assert KeySegConfig.from_file(tmp_path / "c.json") == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"fusion": {"cross_atn": True}}, "fusion.cross_atn"),
        ({"nope": 1}, "unknown config key(s) nope"),
        ({"keyword": {"tau": "hot"}}, "keyword.tau"),
        ({"keyword": {"tau": -1.0}}, "keyword.tau"),
        ({"loss": {"preset": "mine"}}, "loss.preset"),
        ({"fusion": {"preset": None, "use_key": False, "cross_attn": True, "residual": False}}, "fusion.cross_attn"),
        ({"sam": {"size": "vit_x"}}, "sam.size"),
        ({"template": {"prompt": "no placeholders"}}, "template.prompt"),
        ({"lora": {"r": 0}}, "lora.r"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        KeySegConfig.from_dict(data)


def test_yaml_error_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("fusion:\n  presett: keyseg\n")
    with pytest.raises(ValueError, match=r"bad.yaml.*fusion.presett"):
        KeySegConfig.from_file(path)


def test_presets_set_switches():
    for name, switches in FUSION_PRESETS.items():
        cfg = KeySegConfig.from_dict({"fusion": {"preset": name}})
        assert {k: getattr(cfg.fusion, k) for k in switches} == switches


def test_loss_presets():
    lisa = KeySegConfig.from_dict({"loss": {"preset": "lisa"}}).loss
    assert (lisa.ce, lisa.bce, lisa.dice, lisa.keyword) == (1.0, 2.0, 0.5, 1.0)
    paper = KeySegConfig().loss
    assert (paper.ce, paper.bce, paper.dice, paper.keyword) == (1.0, 1.0, 1.0, 1.0)
