"""`python -m keyseg_ros.tools.soak` on a short run: it drives a node it starts, reports, writes JSON.

The 10,000-frame run is a benchmark (docs/ros.md has its figures), not a test.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import ros_harness as h  # noqa: E402


def test_help_names_the_options(ros_install, workdir):
    proc = subprocess.run([sys.executable, "-m", "keyseg_ros.tools.soak", "--help"], cwd=workdir,
                          env=h.child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for option in ("--frames", "--rate", "--model", "--json", "--query-every", "--bad-every",
                   "--max-growth", "--namespace", "--pid"):
        assert option in proc.stdout


def test_short_soak_reports_service_errors_latency_and_memory(ros_install, workdir):
    out = workdir / "soak.json"
    proc = subprocess.run(
        [sys.executable, "-m", "keyseg_ros.tools.soak", "--frames", "150", "--rate", "40", "--warmup", "20",
         "--query-every", "50", "--bad-every", "10", "--size", "160x120", "--max-growth", "100",
         "--timeout", "120", "--json", str(out)],
        cwd=workdir, env=h.child_env(), capture_output=True, text=True, timeout=300)
    log = proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.returncode == 0, log
    for label in ("frames served", "frames dropped", "inference errors", "latency ms p50",
                  "node memory MiB start / end", "verdict: healthy"):
        assert label in proc.stdout, log
    report = json.loads(out.read_text())
    assert report["frames_sent"] == 150 and report["bad_frames_sent"] == 15, log
    assert report["good_frames_sent"] == 135 and report["queries_sent"] == 3, log
    assert 0 < report["frames_served"] <= 135, log
    assert report["frames_dropped"] == 135 - report["frames_served"], log
    assert report["node"]["inference_errors"] == 0 and report["node"]["bad_frames"] > 0, log
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p99"] <= report["latency_ms"]["max"], log
    memory = report["memory_mib"]
    assert memory["start"] > 0 and memory["end"] > 0 and memory["growth_pct"] is not None, log
    assert report["node_exit_code"] == 0 and report["node_log_tracebacks"] == 0, log
    assert report["problems"] == [], log
