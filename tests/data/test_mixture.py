import pytest

from keyseg_core.data import LISA_RATIOS, MixtureDataset, parse_ratios


def make(seed=0, length=1600):
    data = {"sem": list(range(100)), "refer": [f"r{i}" for i in range(30)], "vqa": ["v"] * 5, "reason": ["x0", "x1"]}
    return MixtureDataset(data, LISA_RATIOS, length=length, seed=seed)


def test_ratios_and_determinism():
    mix = make()
    counts = mix.counts()
    assert sum(counts.values()) == 1600
    assert abs(counts["sem"] / 1600 - 9 / 16) < 0.05 and abs(counts["reason"] / 1600 - 1 / 16) < 0.03
    assert [mix[i] for i in range(50)] == [make()[i] for i in range(50)]
    other = make(seed=1)
    assert [mix[i] for i in range(50)] != [other[i] for i in range(50)]
    before = [mix[i] for i in range(50)]
    mix.set_epoch(1)
    assert [mix[i] for i in range(50)] != before


def test_every_item_before_repeats():
    mix = make()
    refer = [mix[i] for i in range(len(mix)) if mix.source_of(i)[0] == "refer"]
    assert len(refer) >= 30 and len(set(refer[:30])) == 30


def test_validation():
    with pytest.raises(ValueError, match="ratios name"):
        MixtureDataset({"a": [1]}, {"b": 1.0}, length=3)
    with pytest.raises(ValueError, match="'a' must be > 0"):
        MixtureDataset({"a": [1]}, {"a": 0.0}, length=3)
    with pytest.raises(ValueError, match="'a' is empty"):
        MixtureDataset({"a": []}, {"a": 1.0}, length=3)
    assert parse_ratios("sem=9, refer=3,vqa=3,reason=1") == LISA_RATIOS
    with pytest.raises(ValueError, match="bad ratio 'sem'"):
        parse_ratios("sem")
