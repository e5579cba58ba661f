"""keyseg_node over real DDS with a category detector and instance_mode categories: one Detection2D per
category in view that holds category_share of the belief, each with its own class_id; the keyword
names the first.

The model is a saved config:tiny checkpoint with a 3-prompt codebook and a detector that sees a cup and
a dog in every patch and no bed (tests/gated_model.py); mask_threshold -1000 makes every instance
mask the whole frame, so each instance has a box.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import ros_harness as h  # noqa: E402
from gated_model import write_gated_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("categories") / "ckpt"
    write_gated_checkpoint(path, [-30.0, -30.0, 30.0, 30.0])  # background, bed, cup, dog
    return path


def _stamp(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def test_each_category_in_view_is_its_own_detection(probe, workdir, ros_install, checkpoint):
    from vision_msgs.msg import Detection2DArray

    session = h.start_node(probe, workdir, f"model:={checkpoint}", "mask_threshold:=-1000.0",
                           "instance_mode:=categories", "category_share:=0.1")
    try:
        detections = probe.collect(Detection2DArray, f"{session.ns}/detections")
        session.wait_subscribed()
        query = "all the things"
        frame, result = session.answer(query)
        assert result.present and result.keyword in ("cup", "dog")
        h.wait_until(lambda: detections.find(lambda d: _stamp(d) == _stamp(frame)) is not None, 30,
                     "the frame's detections", session.proc)
        found = detections.find(lambda d: _stamp(d) == _stamp(frame)).detections
        classes = [d.results[0].hypothesis.class_id for d in found]
        assert sorted(classes) == ["cup", "dog"] and classes[0] == result.keyword
        assert len({d.id for d in found}) == 2  # a track id each
        session.set_parameter("instance_mode", "mask")  # live: the whole answer again
        frame, _ = session.answer("the cup")
        h.wait_until(lambda: detections.find(lambda d: _stamp(d) == _stamp(frame)) is not None, 30,
                     "the next frame's detections", session.proc)
        assert len(detections.find(lambda d: _stamp(d) == _stamp(frame)).detections) == 1
    finally:
        session.proc.assert_clean_stop()
