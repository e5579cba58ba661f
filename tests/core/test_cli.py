"""The `keyseg` command line, run as users run it."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
from skimage import data

KEYSEG = [sys.executable, "-m", "keyseg_core.cli"]


def keyseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(KEYSEG + list(args), capture_output=True, text=True, timeout=300)


def test_help_lists_subcommands():
    out = keyseg("--help")
    assert out.returncode == 0
    for cmd in ("predict", "bench", "info", "convert-sam"):
        assert cmd in out.stdout
    for cmd in ("predict", "bench", "info", "convert-sam", "prepare-offline"):
        assert keyseg(cmd, "--help").returncode == 0


def test_predict_writes_mask_and_overlay(tmp_path):
    photo = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    out = keyseg("predict", "--image", str(photo), "--query", "Which animal is resting?",
                 "--out", str(tmp_path / "out"), "--model", "config:tiny")
    assert out.returncode == 0, out.stderr
    assert "untrained" in out.stdout and "keyword:" in out.stdout and "timings (ms)" in out.stdout
    mask = np.asarray(Image.open(tmp_path / "out" / "cat_mask.png"))
    overlay = np.asarray(Image.open(tmp_path / "out" / "cat_overlay.png"))
    assert mask.shape == data.chelsea().shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert overlay.shape == data.chelsea().shape


def test_predict_tensorrt_backend_explains_itself(tmp_path):
    photo = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    out = keyseg("predict", "--image", str(photo), "--query", "cat", "--out", str(tmp_path), "--model", "config:tiny",
                 "--backend", "tensorrt")
    assert out.returncode == 2 and "TensorRT is not installed" in out.stderr and "keyseg export" in out.stderr


def test_predict_bad_image_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    out = keyseg("predict", "--image", str(bad), "--query", "x", "--out", str(tmp_path), "--model", "config:tiny")
    assert out.returncode == 2 and "broken.jpg: not a readable image" in out.stderr


def test_bench_prints_table_and_writes_json(tmp_path):
    out = keyseg("bench", "--models", "config:tiny", "--iters", "1", "--warmup", "0", "--image-size", "320x240",
                 "--frames", "3", "--video", "3", "--generate-tokens", "3", "--backend", "torch,tensorrt",
                 "--json", str(tmp_path / "b.json"))
    assert out.returncode == 0, out.stderr
    assert "llm_prefill" in out.stdout and "mask_decoder" in out.stdout and "stream fps" in out.stdout
    report = json.loads((tmp_path / "b.json").read_text())
    torch_row, trt_row = report["results"]
    stages = torch_row["full"]["stages_ms"]
    assert {"vision_tower", "llm_prefill", "fusion", "sam_encoder", "mask_decoder", "postprocess", "total"} <= set(stages)
    assert torch_row["streaming"]["stages_ms"]["llm_prefill"]["median"] == 0.0
    ratios = torch_row["ratios"]
    assert ratios["streaming_over_full_fps"] > 0 and ratios["cached_frame"]["first_over_second"] > 0
    assert ratios["prefill_vs_generate"]["tokens_generated"] == 3
    video = torch_row["video"]
    assert video["frames"] == 3 and video["reasonings"] == 1 and 0 <= video["streaming"]["miou_vs_full"] <= 1
    assert video["sequences"] == 1 and len(video["queries"]) == 1
    assert torch_row["peak_host_mb"] > 0
    assert "TensorRT is not installed" in trt_row["skipped"]  # a backend that cannot run is a row


def test_info_prints_parameter_summary():
    out = keyseg("info", "--model", "config:tiny")
    assert out.returncode == 0, out.stderr
    assert "trainable" in out.stdout and "sam_mask_decoder" in out.stdout and "UNTRAINED" in out.stdout
