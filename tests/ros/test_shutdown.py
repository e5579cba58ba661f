"""keyseg_node stops cleanly on SIGINT and SIGTERM in every lifecycle state: exit code 0, the
inference thread joined before the ROS context goes away, no traceback.

The many cycles run in one process (shutdown_runner.py: the real `main()`, a real signal, the real
tiny model, real DDS), because a process start costs ~5 s of imports. Two real node processes
check the same from outside: unconfigured, and mid-frame with a service call waiting.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import ros_harness as h  # noqa: E402

RUNNER = Path(__file__).with_name("shutdown_runner.py")
MID_FRAME_REPEATS = 20
# What a stop on a dead context used to print, besides a traceback.
NOISE = ("Traceback", "context is invalid", "never retrieved", "RCLError", "InvalidHandle")


def _assert_quiet(out: str) -> None:
    for word in NOISE:
        assert word not in out, f"{word!r} in the output:\n{out[-4000:]}"


def test_every_state_and_signal_and_20_stops_mid_frame(ros_install, workdir):
    plan = [f"mid_frame:INTx{MID_FRAME_REPEATS // 2}", f"mid_frame:TERMx{MID_FRAME_REPEATS // 2}"]
    plan += [f"{case}:{sig}" for case in ("unconfigured", "inactive", "service_wait")
             for sig in ("INT", "TERM")]
    proc = subprocess.run([sys.executable, str(RUNNER), *plan], cwd=workdir, env=h.child_env(),
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "ALL CYCLES OK" in proc.stdout, out[-6000:]
    cycles = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(cycles) == MID_FRAME_REPEATS + 6
    mid_frame = [c for c in cycles if c["case"] == "mid_frame"]
    assert len(mid_frame) == MID_FRAME_REPEATS and all(c["busy"] and c["rc"] == 0 for c in mid_frame)
    assert {(c["case"], c["signal"]) for c in cycles} == {
        (case, sig) for case in ("mid_frame", "unconfigured", "inactive", "service_wait")
        for sig in ("INT", "TERM")}
    assert all(c["stop_s"] < 10 for c in cycles), cycles  # the 30 s test delay was cut short
    _assert_quiet(out)


def test_unconfigured_process_stops_on_sigterm(probe, workdir):
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState

    session = h.start_node(probe, workdir, "model:=config:tiny", "autostart:=false")
    state = probe.call(GetState, f"{session.ns}/keyseg_node/get_state", GetState.Request(), timeout=60,
                       resend_every=5.0)
    assert state.current_state.id == State.PRIMARY_STATE_UNCONFIGURED
    session.proc.proc.send_signal(signal.SIGTERM)
    assert session.proc.wait(30) == 0, session.proc.output()[-3000:]
    _assert_quiet(session.proc.output())


def test_process_stops_on_sigterm_mid_frame_with_a_service_call_waiting(probe, workdir):
    """A frame held in the model (test_frame_delay) and a `segment` call queued behind it: the
    call is answered, the process exits 0 without publishing on a dead context. Whole-model mode:
    in streaming mode the held frame would be a reasoning pass on its own thread, with nothing
    queued behind it (shutdown_runner's mid_frame cycles cover that)."""
    from keyseg_ros.srv import Segment

    session = h.start_node(probe, workdir, "model:=config:tiny", "test_frame_delay:=60.0",
                           "diagnostics_period:=0.2", "streaming:=false")
    session.wait_subscribed()
    session.send_query("the cup")
    h.publish_until(session.image, lambda: h.make_image(64, 48),
                    lambda: session.stats().get("inference_in_progress") == "true", 60,
                    "a frame in the model", session.proc)
    client, future = probe.call_async(
        Segment, f"{session.ns}/segment", Segment.Request(image=h.make_image(32, 24), query="a mug"))
    try:
        session.wait_count_above("service_calls", 0)
        assert not future.done()
        session.proc.proc.send_signal(signal.SIGTERM)
        assert session.proc.wait(30) == 0, session.proc.output()[-3000:]
        h.wait_until(future.done, 10, "the answer to the waiting call")
        assert not future.result().success and "shutting down" in future.result().message
    finally:
        probe.node.destroy_client(client)
    out = session.proc.output()
    assert "SIGTERM received: shutting down" in out
    _assert_quiet(out)
