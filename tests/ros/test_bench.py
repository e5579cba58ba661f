"""`python -m keyseg_ros.tools.node_bench` runs end to end and writes its JSON (numbers are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import ros_harness as h  # noqa: E402


def test_bench_prints_tables_and_writes_json(ros_install, workdir):
    out = workdir / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "keyseg_ros.tools.node_bench", "--repeats", "3", "--duration", "1",
                           "--rate", "10", "--json", str(out)], cwd=workdir, env=h.child_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Adapter overhead per frame" in proc.stdout and "End to end over DDS" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["size"] for r in report["adapter_ms"]] == ["640x480", "1280x720"]
    assert all(r["answered"] > 0 for r in report["end_to_end"]), report["end_to_end"]
