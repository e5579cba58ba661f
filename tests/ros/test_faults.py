"""Faults a robot's day brings, on one node process with the real tiny model: the model raising
mid-frame (a simulated out-of-memory error), runtime parameter changes, and a model reload through
the lifecycle while frames keep arriving. Each is logged once with its cause; the node keeps
serving."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import ros_harness as h  # noqa: E402

TINY_AS_FILE = ("import sys; from keyseg_core.modeling.build import registry_config; "
                "registry_config('tiny').to_json(sys.argv[1])")


@pytest.fixture(scope="module")
def tiny_config_file(workdir):
    """config:tiny written as a config file: a second model name to reload to (started early:
    writing it imports torch, ~4 s, while the node starts)."""
    path = workdir / "tiny_again.json"
    proc = subprocess.Popen([sys.executable, "-c", TINY_AS_FILE, str(path)], env=h.child_env())
    yield proc, path
    proc.wait(60)


@pytest.fixture(scope="module")
def node(probe, workdir, tiny_config_file):
    session = h.start_node(probe, workdir, "model:=config:tiny", "diagnostics_period:=0.2")
    session.wait_subscribed()
    yield session
    session.proc.assert_clean_stop()


def _lines(node, text: str) -> list[str]:
    return [line for line in node.proc.output().splitlines() if text in line]


def test_out_of_memory_mid_frame_is_logged_once_and_the_node_keeps_serving(node):
    node.answer("before the fault")
    errors_before = node.count("inference_errors")
    assert node.set_parameter("test_inference_faults", 3).successful
    # Frames keep coming; the next three predictions raise, then frames are answered again.
    node.answer("during the fault")
    h.wait_until(lambda: node.count("inference_errors") >= errors_before + 3, 15,
                 "three inference errors in diagnostics", node.proc)
    h.wait_until(lambda: _lines(node, "inference recovered after 3 failed prediction(s)"), 15,
                 "the recovery line", node.proc)
    failed = _lines(node, "inference failed: OutOfMemoryError")
    assert len(failed) == 1, node.proc.output()[-3000:]
    assert "CUDA out of memory" in failed[0] and "keeps serving" in failed[0]
    assert "Traceback" not in node.proc.output()
    assert node.stats()["last_problem"].startswith("inference_errors: OutOfMemoryError")


def test_runtime_parameter_changes_are_logged_once_with_when_they_apply(node):
    assert node.set_parameter("mask_threshold", 0.25).successful
    assert node.set_parameter("mask_threshold", 0.25).successful  # unchanged: not logged again
    assert node.set_parameter("publish_overlay", False).successful
    assert node.set_parameter("queue_depth", 2).successful  # the default is 5
    refused = node.set_parameter("device", "gpu")
    assert not refused.successful and "'device'" in refused.reason
    node.answer("after parameter changes")
    threshold = _lines(node, "parameter 'mask_threshold' changed from 0.0 to 0.25")
    assert len(threshold) == 1 and "applies now" in threshold[0]
    assert len(_lines(node, "parameter 'publish_overlay' changed from True to False")) == 1
    depth = _lines(node, "parameter 'queue_depth' changed from 5 to 2")
    assert len(depth) == 1 and "applies after a reload" in depth[0]
    assert len(_lines(node, "parameter 'device' = 'gpu' refused")) == 1
    assert not _lines(node, "parameter 'device' changed")


def test_model_reload_through_the_lifecycle_while_frames_keep_arriving(node, tiny_config_file):
    from lifecycle_msgs.msg import Transition

    writer, new_model = tiny_config_file
    assert writer.wait(120) == 0 and new_model.is_file()
    node.answer("before the reload")
    stop = threading.Event()

    def camera() -> None:  # frames keep arriving at ~20 Hz through the whole reload
        while not stop.wait(0.05):
            node.image.publish(h.make_image(64, 48))

    thread = threading.Thread(target=camera, daemon=True)
    thread.start()
    try:
        node.change_state(Transition.TRANSITION_DEACTIVATE)
        node.change_state(Transition.TRANSITION_CLEANUP)
        assert node.set_parameter("model", str(new_model)).successful
        node.change_state(Transition.TRANSITION_CONFIGURE)
        node.change_state(Transition.TRANSITION_ACTIVATE)
        node.wait_subscribed()
        _, result = node.answer("after the reload")
    finally:
        stop.set()
        thread.join()
    assert result.model == str(new_model)
    assert len(_lines(node, "deactivated (lifecycle transition)")) == 1
    assert len(_lines(node, "cleaned up (lifecycle transition): model 'config:tiny' released")) == 1
    assert len(_lines(node, f"parameter 'model' changed from 'config:tiny' to '{new_model}'")) == 1
    assert len(_lines(node, f"model '{new_model}' loaded")) == 1
    assert "Traceback" not in node.proc.output()
