"""The torch-vs-onnxruntime SAM benchmark prints its table and writes JSON."""

import json

import pytest

from keyseg_core.runtime.ort_bench import main


def test_bench_tiny_table_and_json(onnx_cache, tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["--models", "config:tiny", "--iters", "2", "--warmup", "0", "--threads", "1", "--json", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sam_encoder" in out and "decoder" in out and "ort/torch" in out
    report = json.loads(path.read_text())
    assert report["threads"] == 1 and [r["part"] for r in report["results"]] == ["sam_encoder", "decoder"]
    for row in report["results"]:
        assert row["torch_ms"]["min"] > 0 and row["onnxruntime_ms"]["min"] > 0 and row["max_abs_diff"] < 1e-3


def test_bench_rejects_bad_iters():
    with pytest.raises(SystemExit, match="--iters must be >= 1"):
        main(["--iters", "0"])
