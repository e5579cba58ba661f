"""Loading real-size weights (keyseg_core.runtime.load_bench), proved at tiny size on the CPU: the
written folder has convert-lisa's layout and passes the frozen-base check; the timed load runs in a
fresh process and reports every figure the GPU script's table needs."""

from __future__ import annotations

import json

import pytest
import torch

from keyseg_core.runtime.load_bench import WRITE_REPORT, main, time_fresh_process, write_random_checkpoint
from keyseg_core.weights.checkpoint import checkpoint_config, load_checkpoint


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("load") / "random-tiny"
    return out, write_random_checkpoint("tiny", out, "cpu", "float32")


def test_the_folder_has_convert_lisas_layout_and_loads_checked(written):
    out, report = written
    assert (out / "bases" / "llava" / "config.json").is_file() and (out / "bases" / "llava" / "tokenizer.json").is_file()
    assert (out / "bases" / "sam.safetensors").is_file()
    saved = json.loads((out / "config.json").read_text())
    assert saved["backbone"]["mllm"] == "./bases/llava" and saved["sam"]["weights"] == "./bases/sam.safetensors"
    assert checkpoint_config(out).backbone.mllm == str(out / "bases" / "llava")
    assert report["bytes"] > 0 and json.loads((out / WRITE_REPORT).read_text())["config"] == "tiny"
    model, _ = load_checkpoint(out, torch.bfloat16)  # the frozen bases match the fingerprint saved with them
    assert {p.dtype for p in model.sam.parameters()} == {torch.bfloat16}


def test_writing_refuses_an_existing_folder_and_a_pretrained_config(written, tmp_path):
    out, _ = written
    with pytest.raises(FileExistsError, match="exists"):
        write_random_checkpoint("tiny", out, "cpu", "float32")
    with pytest.raises(ValueError, match="--config keyseg-tiny: write needs a config of random weights"):
        write_random_checkpoint("keyseg-tiny", tmp_path / "x", "cpu", "float32")


def test_the_timed_load_reports_first_mask_and_memory(written, tmp_path, capsys):
    out, _ = written
    figures = time_fresh_process(str(out), "cpu", "float32")
    assert figures["mask_shape"] == [480, 640]
    assert 0 < figures["start_and_imports_s"] < figures["first_mask_s"]
    assert figures["first_mask_s"] >= figures["load_s"] + figures["first_predict_s"]
    assert 0 < figures["host_private_peak_mb"] <= figures["host_rss_peak_mb"]
    assert figures["gpu_peak_mb"] is None and figures["dtype"] == "float32"


def test_a_failed_load_names_the_folder(tmp_path):
    with pytest.raises(RuntimeError, match=f"loading {tmp_path} failed"):
        time_fresh_process(str(tmp_path), "cpu", "float32")


def test_help_lists_both_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "write" in text and "time" in text
