"""TrainConfig: YAML loading, errors that name the key, base files, --set overrides, schedule, examples."""

from pathlib import Path

import pytest
import yaml

from keyseg_core.config.files import apply_override
from keyseg_core.train.optim import learning_rate
from keyseg_core.train.stage1.config import BasesConfig
from keyseg_core.train.stage2.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[2] / "recipes"
MINIMAL = {"model": "tiny", "data": [{"name": "reasonseg", "root": "/data"}]}


def write(tmp_path: Path, data: dict, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_are_lisa_and_model_resolves():
    config = TrainConfig.from_dict(MINIMAL)
    assert (config.optimizer.lr, config.optimizer.betas, config.schedule.warmup_steps) == (3e-4, [0.9, 0.95], 100)
    assert (config.batch_size, config.grad_accum, config.distributed) == (2, 10, "ddp")
    assert config.model_config().name == "tiny"


@pytest.mark.parametrize("change, key", [
    ({"optimizer": {"lrr": 1}}, "optimizer.lrr"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr"),
    ({"data": [{"name": "reasonseg", "root": "/d", "ratio": 0}]}, "data[0].ratio"),
    ({"data": [{"name": "imagenet", "root": "/d"}]}, "data[0].name"),
    ({"data": [{"name": "reasonseg"}]}, "data[0].root"),
    ({"data": [{"name": "refcoco", "root": "/d", "keyword": "maybe"}]}, "data[0].keyword"),
    ({"distributed": "horovod"}, "distributed"),
    ({"model_overrides": {"fusion": {"preset": "nope"}}}, "fusion.preset"),
    ({"model": "llama-99b"}, "llama-99b"),
    ({"keep_last": 0}, "keep_last"),
    ({"optimizer": {"lr_scale": {"sam.": -1}}}, "lr_scale.sam."),
])
def test_errors_name_the_key_and_the_file(tmp_path, change, key):
    path = write(tmp_path, {**MINIMAL, **change})
    with pytest.raises(ValueError) as info:
        TrainConfig.from_file(path)
    assert key in str(info.value) and str(path) in str(info.value)


def test_base_file_merges_and_set_overrides(tmp_path):
    write(tmp_path, {**MINIMAL, "optimizer": {"lr": 1e-4, "eps": 1e-6}}, "base.yaml")
    child = write(tmp_path, {"base": "base.yaml", "optimizer": {"lr": 5e-4}, "model_overrides": {"fusion": {"preset": "seg_only"}}})
    config = TrainConfig.from_file(child, ["max_steps=7", "data.0.ratio=3", "schedule.decay=cosine"])
    assert (config.optimizer.lr, config.optimizer.eps, config.max_steps) == (5e-4, 1e-6, 7)
    assert config.data[0].ratio == 3.0 and config.schedule.decay == "cosine"
    fusion = config.model_config().fusion
    assert (fusion.use_key, fusion.cross_attn, fusion.self_attn) == (False, False, False)
    with pytest.raises(ValueError, match="has no item 5"):
        apply_override({"data": []}, "data.5.ratio=1")


def test_setting_a_switch_drops_the_base_preset():
    fusion = TrainConfig.from_dict({**MINIMAL, "model_overrides": {"fusion": {"residual": False}}}).model_config().fusion
    assert fusion.preset is None and (fusion.use_key, fusion.cross_attn, fusion.self_attn, fusion.residual) == (True, True, True, False)


def test_refer_data_without_keyword_source_is_refused_when_model_uses_key(tmp_path):
    from keyseg_core.train.stage2.data import open_sources

    config = TrainConfig.from_dict({**MINIMAL, "data": [{"name": "refcocog", "root": str(tmp_path)}]})
    with pytest.raises(ValueError, match=r"data\[0\].keyword.*category"):
        open_sources(config, config.model_config(), skip_bad=False)


def test_schedule_warmup_then_linear_decay():
    config = TrainConfig.from_dict({**MINIMAL, "max_steps": 10, "optimizer": {"lr": 1.0},
                                    "schedule": {"warmup_steps": 2, "min_lr_ratio": 0.1}})
    lrs = [learning_rate(s, config) for s in range(10)]
    assert lrs[:3] == [0.5, 1.0, 1.0] and lrs[-1] == pytest.approx(0.1 + 0.9 * (1 - 7 / 8))
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_configs_validate(path):
    if path.name == "keyseg_from_lisa.yaml":
        pytest.skip("names a converted LISA folder; validated against one in tests/core/test_lisa_convert.py")
    if path.name.endswith("_bases.yaml"):  # stage 1 of a model with no pretrained bases (keyseg pretrain)
        assert BasesConfig.from_file(path).model_config().trainable.sam_image_encoder
        return
    config = TrainConfig.from_file(path)
    assert config.model_config().loss.bce >= 0


def test_ablation_files_select_the_paper_rows():
    expected = {"seg_only": (False, False, False, False), "seg_sa": (False, False, True, False),
                "keyseg": (True, True, True, True), "ca_only": (True, True, False, False),
                "sa_only": (True, False, True, False), "ca_sa_no_residual": (True, True, True, False)}
    for row, switches in expected.items():
        fusion = TrainConfig.from_file(CONFIGS / "ablations" / f"{row}.yaml").model_config().fusion
        assert (fusion.use_key, fusion.cross_attn, fusion.self_attn, fusion.residual) == switches, row


def test_lr_scale_groups_and_keeps_a_part_as_it_is(tmp_path):
    """optimizer.lr_scale {sam.: 0}: SAM's tensors stay bit-identical over steps (and stay trainable, so
    they are saved); every other part moves; a prefix that names nothing is refused by its key."""
    import torch

    from keyseg_core.modeling.build import build_model, registry_config
    from keyseg_core.train.optim import make_optimizer, set_lr
    from keyseg_core.train.stage2.loop import LossModule

    config = TrainConfig.from_file(write(tmp_path, {**MINIMAL, "optimizer": {"lr": 1e-2, "lr_scale": {"sam.": 0.0}}}))
    model, _ = build_model(registry_config("tiny"))
    module = LossModule(model, None, 0.0)
    optimizer = make_optimizer(module, config)
    assert sorted({g["lr_scale"] for g in optimizer.param_groups}) == [0.0, 1.0]
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for _ in range(2):
        set_lr(optimizer, 1e-2)
        loss = sum(p.float().square().sum() for p in model.parameters() if p.requires_grad)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    moved = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert moved and all(not n.startswith("sam.") for n in moved)
    assert any(n.startswith("sam.") for n in before)  # SAM's decoder is still trainable, hence saved
    bad = TrainConfig.from_file(write(tmp_path, {**MINIMAL, "optimizer": {"lr": 1e-3, "lr_scale": {"sem.": 0.0}}}, "bad.yaml"))
    with pytest.raises(ValueError, match="optimizer.lr_scale.sem.: matches no trainable parameter"):
        make_optimizer(LossModule(model, None, 0.0), bad)
