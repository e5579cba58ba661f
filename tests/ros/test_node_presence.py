"""keyseg_node over real DDS with a presence calibration: "not here" publishes an empty mask, zero
detections, no keyword and an answer that says so, and keeps serving.

The model is a saved config:tiny checkpoint with mask_threshold -1000 (every raw mask is the whole
frame, area 1.0) and a presence.json whose threshold no mask exceeds, so every answer is "not here";
the same node without the file answers with the whole frame.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from keyseg_core.inference.presence import PRESENCE_FILE, PresenceCalibration
    from keyseg_core.modeling.build import build_model, registry_config
    from keyseg_core.weights.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("presence") / "ckpt"
    save_checkpoint(build_model(registry_config("tiny"))[0], path)
    PresenceCalibration("area", 1.0, 0.05, "a test threshold no mask exceeds", 0.0, 0.0, 1.0).save(path / PRESENCE_FILE)
    return path


def test_not_here_answers_with_nothing_and_says_so(probe, workdir, ros_install, checkpoint):
    from vision_msgs.msg import Detection2DArray

    session = h.start_node(probe, workdir, f"model:={checkpoint}", "mask_threshold:=-1000.0")
    try:
        detections = probe.collect(Detection2DArray, f"{session.ns}/detections")
        session.wait_subscribed()
        query = "Where is the cup?"
        frame, result = session.answer(query)
        assert not result.present and result.keyword == "" and not result.has_box
        assert result.answer.startswith("I don't see") and result.confidence == 0.0
        assert not np.frombuffer(bytes(result.mask.data), np.uint8).any()
        stamp = (frame.header.stamp.sec, frame.header.stamp.nanosec)
        h.wait_until(lambda: detections.find(lambda d: (d.header.stamp.sec, d.header.stamp.nanosec) == stamp)
                     is not None and session.keywords.find(lambda k: k.query == query) is not None,
                     30, "the frame's detections and keyword", session.proc)
        assert detections.find(lambda d: (d.header.stamp.sec, d.header.stamp.nanosec) == stamp).detections == []
        assert session.keywords.find(lambda k: k.query == query).keyword == ""
        _, again = session.answer("the plate")  # still serving
        assert not again.present
    finally:
        session.proc.assert_clean_stop()
