"""Multi-GPU engines without GPUs: FSDP trains, saves and resumes in two gloo processes; the keyword
head gathers a ZeRO-3-partitioned table; batches take the compute dtype; missing engines are named."""

from __future__ import annotations

import json
import sys
import types
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_train_cli import keyseg, ok
from train_fixtures import write_config, write_reasonseg

from keyseg_core.modeling.keyword_head import KeywordHead
from keyseg_core.train import engine
from keyseg_core.train.stage2.config import TrainConfig

MINIMAL = {"model": "tiny", "data": [{"name": "reasonseg", "root": "/d"}]}


def test_fsdp_two_processes_train_save_and_resume(tmp_path):
    """Mixed data (ReasonSeg + VQA, so some micro-batches skip SAM on one rank only), 2 steps, a
    checkpoint, then --resume to step 4 with the optimizer state restored by name."""
    write_reasonseg(tmp_path / "data", "train", {"lamp": {"box": (4, 4, 14, 12)}, "cup": {"box": (10, 8, 20, 16)}},
                    keywords={"lamp": "lamp", "cup": "cup"})
    images = tmp_path / "data" / "coco" / "train2017"
    images.mkdir(parents=True)
    Image.fromarray(np.full((16, 20, 3), 90, np.uint8)).save(images / "v.jpg")
    vqa = [{"id": "v", "image": "v.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                           {"from": "gpt", "value": "A grey card."}]}]
    (tmp_path / "data" / "llava_dataset").mkdir()
    (tmp_path / "data" / "llava_dataset" / "vqa.json").write_text(json.dumps(vqa))
    data = [{"name": "reasonseg", "root": str(tmp_path / "data"), "ratio": 1.0},
            {"name": "vqa", "root": str(tmp_path / "data"), "split": "vqa", "ratio": 1.0, "keyword": "none"}]
    config = write_config(tmp_path / "fsdp.yaml", tmp_path / "data", tmp_path / "run", max_steps=4, save_every=2,
                          data=data, distributed="fsdp", grad_accum=2)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    ok(keyseg("train", "--config", str(config), "--stop-at", "2", "--no-progress", cwd=tmp_path, launcher=torchrun))
    step2 = tmp_path / "run" / "checkpoints" / "step_000002"
    assert (step2 / "engine" / "optimizer.pt").is_file() and (step2 / "model" / "trainable.safetensors").is_file()
    result = ok(keyseg("train", "--config", str(config), "--resume", "--no-progress", cwd=tmp_path, launcher=torchrun))
    assert "step_000002 (step 2)" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["engine"], summary["world_size"], summary["step"]) == ("FSDP (torch)", 2, 4)
    assert np.isfinite(summary["last"]["loss"]) and np.isfinite(summary["last"]["grad_norm"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "step_000004" / "engine" / "optimizer.pt", weights_only=True)
    steps = {float(s["step"]) for s in state["state"].values()}
    assert steps == {4.0}  # AdamW carried its 2 steps over the resume
    assert any(name.startswith("model.fusion.") for name in state["state"])  # keyed by parameter name
    from keyseg_core.weights.checkpoint import load_checkpoint

    load_checkpoint(tmp_path / "run" / "final")  # complete weights; frozen fingerprint matches


class FakeZero:
    """Stands in for deepspeed.zero: gathering fills the partitioned weight, leaving empties it."""

    def __init__(self, full: torch.Tensor) -> None:
        self.full, self.calls = full, 0

    def GatheredParameters(self, params, modifier_rank=None):  # noqa: N802 - deepspeed's name
        fake = self

        class Gather:
            def __enter__(self):
                fake.calls += 1
                params[0].data = fake.full.clone()

            def __exit__(self, *exc):
                params[0].data = torch.empty(0)

        return Gather()


def test_keyword_head_gathers_a_zero3_partitioned_table(monkeypatch):
    torch.manual_seed(0)
    head, table, key = KeywordHead(8, 1.0), torch.randn(20, 8), torch.randn(3, 8, requires_grad=True)
    want = head(key, table)
    partitioned = torch.nn.Parameter(torch.empty(0), requires_grad=False)
    partitioned.ds_id = 7  # what ZeRO-3 marks its parameters with
    zero = FakeZero(table)
    monkeypatch.setitem(sys.modules, "deepspeed", types.SimpleNamespace(zero=zero))
    got = head(key, partitioned)
    assert zero.calls == 1 and partitioned.numel() == 0  # gathered for the read, released after
    torch.testing.assert_close(got, want)
    got.sum().backward()  # the kept copy serves the backward
    assert key.grad is not None and key.grad.abs().sum() > 0


@pytest.mark.parametrize("package, distributed", [("deepspeed", "deepspeed-zero2"), ("accelerate", "ddp")])
def test_missing_engine_package_is_named(monkeypatch, package, distributed):
    real = engine.importlib.util.find_spec
    monkeypatch.setattr(engine.importlib.util, "find_spec", lambda name: None if name == package else real(name))
    with pytest.raises(RuntimeError, match=f"'{package}' package, which is not installed"):
        engine.make_accelerator(TrainConfig.from_dict({**MINIMAL, "distributed": distributed}))


def test_zero3_refuses_data_that_skips_sam_or_fusion():
    data = MINIMAL["data"] + [{"name": "vqa", "root": "/v", "keyword": "none"}]
    with pytest.raises(ValueError, match=r"deepspeed-zero3.*\['vqa'\]"):
        TrainConfig.from_dict({**MINIMAL, "data": data, "distributed": "deepspeed-zero3"})


@pytest.mark.parametrize("distributed, precision, world, dtype", [
    ("deepspeed-zero2", "bf16", 2, torch.bfloat16), ("fsdp", "bf16", 2, torch.bfloat16),
    ("fsdp", "bf16", 1, torch.float32), ("ddp", "bf16", 2, torch.float32), ("deepspeed-zero3", "fp32", 2, torch.float32),
])
def test_batches_take_the_compute_dtype(distributed, precision, world, dtype):
    config = TrainConfig.from_dict({**MINIMAL, "distributed": distributed, "precision": precision})
    assert engine.input_dtype(SimpleNamespace(num_processes=world), config) == dtype
