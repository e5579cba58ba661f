"""scripts/perf_table.py: the GPU benchmark's JSON -> the README's performance table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "data" / "bench_gpu_fixture.json"


def _perf_table():
    spec = importlib.util.spec_from_file_location("perf_table", ROOT / "scripts" / "perf_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


perf_table = _perf_table()


def test_table_names_the_machine_and_every_measured_run():
    table = perf_table.markdown(json.loads(FIXTURE.read_text()))
    head = table.splitlines()[0]
    for fact in ("2026-12-04 15:00 UTC", "NVIDIA H200", "driver 580.95.05", "torch 2.11.0+cu130", "CUDA 13.0",
                 "transformers 5.17.0"):
        assert fact in head
    rows = [line for line in table.splitlines() if line.startswith("| sam_h")]
    assert rows == ["| sam_h | llava7b-sam-h-random | torch | bfloat16 | 99.6 | 53.8 (18.6) | 17.2 | 39.1 | 3.4 |",
                    "| sam_h | llava7b-sam-h-random | compile | bfloat16 | 73.7 | 32.2 (31.1) | 8.0 | 19.2 | 1.1 |"]
    assert "PIL 17.20 ms, on the device 0.41 ms" in table
    assert "sam_b: over its 90 s limit" in table  # a failed step is named, not dropped


def test_readme_block_is_replaced_and_nothing_else(tmp_path):
    readme = f"# x\nbefore\n{perf_table.PERF_START}\nold table\n{perf_table.PERF_END}\nafter\n"
    out = perf_table.replace_block(readme, "| new |\n")
    assert out == f"# x\nbefore\n{perf_table.PERF_START}\n| new |\n{perf_table.PERF_END}\nafter\n"
    with pytest.raises(ValueError, match="perf-table:start"):
        perf_table.replace_block("# no markers\n", "| new |\n")


def test_project_readme_has_the_block():
    perf_table.replace_block((ROOT / "README.md").read_text(), "| t |\n")


def test_combine_names_missing_and_failed_steps(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"results": []}))
    report = perf_table.combine({"good": good, "lost": tmp_path / "lost.json", "slow": good},
                                {"slow": "over its 90 s limit"}, env={"torch": "t"})
    assert list(report["parts"]) == ["good"]
    assert report["failed"]["slow"] == "over its 90 s limit"
    assert report["failed"]["lost"].startswith("no result (FileNotFoundError")


def test_a_load_step_is_one_sentence_with_its_figures():
    load = {"checkpoint": "/x", "first_mask_s": 21.5, "start_and_imports_s": 6.2, "load_s": 13.1,
            "first_predict_s": 2.2, "host_private_peak_mb": 3.5 * 1024, "host_rss_peak_mb": 17.0 * 1024,
            "gpu_peak_mb": 16.2 * 1024}
    write = {"config": "llava7b-sam-h-random", "bytes": 15.4e9, "dtype": "bfloat16", "write_s": 40.0}
    report = {"date": "d", "environment": {"gpu": "G", "torch": "t"}, "parts": {"load": {"load": load, "write": write}},
              "failed": {}}
    lines = perf_table.markdown(report).strip().splitlines()
    line = next(line for line in lines if line.startswith("Loading"))
    assert lines[-2:] == ["| first mask from disk <= 30 s | load | torch | 21.5 s | yes |",
                          "| host private memory <= 8 GB | load | torch | 3.5 GB | yes |"]
    assert line == ("Loading (load: llava7b-sam-h-random random weights, 15.4 GB bfloat16 in convert-lisa's layout): "
                    "first mask 21.5 s after the process started (imports 6.2 s, load 13.1 s, first frame 2.2 s); "
                    "host private-memory peak 3.5 GB (RSS with the mapped weight files 17.0 GB), GPU peak 16.2 GB.")


def test_targets_are_judged_on_a_gpu_run_only():
    report = json.loads(FIXTURE.read_text())
    rows = {(name, part, backend): (value, met) for name, part, backend, value, met in perf_table.targets(report)}
    assert rows[("full query-to-mask <= 40 ms", "sam_h", "compile")] == ("73.7", False)
    assert rows[("streaming >= 60 fps", "sam_h", "compile")] == ("31.1", False)
    assert "| full query-to-mask <= 40 ms | sam_h | compile | 73.7 | **no** |" in perf_table.markdown(report)
    report["environment"]["gpu"] = None
    assert perf_table.targets(report) == []
