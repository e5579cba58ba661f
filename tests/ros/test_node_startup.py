"""keyseg_node start-up: refused parameters and unloadable models end the process with a clear
error; with autostart:=false a lifecycle manager drives it (here with compressed input)."""

from __future__ import annotations

import array
import io

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402


def _run_to_exit(workdir, params: list[str], timeout: float = 90.0) -> tuple[int, str]:
    proc = h.Process.start("keyseg_node", ["--ros-args", "-r", f"__ns:={h.unique_namespace()}",
                                    *[a for p in params for a in ("-p", p)]], workdir)
    try:
        rc = proc.wait(timeout)
    except Exception:
        proc.stop()
        raise
    return rc, proc.output()


@pytest.mark.parametrize("param, named", [
    ("backend:=tflite", "backend"),
    ("device:=gpu0", "device"),
    ("precision:=int3", "precision"),
    ("queue_depth:=0", "queue_depth"),
    ("image_reliability:=sometimes", "image_reliability"),
    ("max_rate:=fast", "max_rate"),  # wrong type
])
def test_a_wrong_parameter_is_refused_by_name(ros_install, workdir, param, named):
    rc, out = _run_to_exit(workdir, ["model:=config:tiny", param])
    assert rc == 2, out
    assert f"'{named}'" in out and "Traceback" not in out, out


def test_a_model_that_cannot_load_ends_the_process(ros_install, workdir):
    rc, out = _run_to_exit(workdir, ["model:=/nonexistent/keyseg-checkpoint"])
    assert rc == 1, out
    assert "cannot load model '/nonexistent/keyseg-checkpoint'" in out
    assert "Traceback" not in out, out


def test_a_backend_keyseg_core_lacks_fails_configure_clearly(ros_install, workdir):
    rc, out = _run_to_exit(workdir, ["model:=config:tiny", "backend:=tensorrt"])
    assert rc == 1, out
    assert "backend 'tensorrt'" in out and "Traceback" not in out, out


def _jpeg(width: int, height: int):
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).save(buffer, format="JPEG")
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec = next(h._stamps)
    msg.header.frame_id = "jpeg_camera"
    msg.data = array.array("B", buffer.getvalue())
    return msg


def test_lifecycle_manager_drives_a_node_with_compressed_input(probe, workdir, ros_install):
    from keyseg_ros.msg import SegmentationResult
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage
    from std_msgs.msg import String

    ns = h.unique_namespace()
    proc = h.Process.start("keyseg_node", ["--ros-args", "-r", f"__ns:={ns}", "-p", "model:=config:tiny",
                                    "-p", "autostart:=false", "-p", "compressed_input:=true"], workdir)

    def state() -> int:
        return probe.call(GetState, f"{ns}/keyseg_node/get_state", GetState.Request(), timeout=90,
                          resend_every=5.0).current_state.id

    def change(transition: int) -> None:
        response = probe.call(ChangeState, f"{ns}/keyseg_node/change_state",
                              ChangeState.Request(transition=Transition(id=transition)), timeout=60)
        assert response.success, proc.output()[-2000:]

    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    change(Transition.TRANSITION_CONFIGURE)
    assert state() == State.PRIMARY_STATE_INACTIVE
    images = probe.publisher(CompressedImage, f"{ns}/image/compressed", qos_profile_sensor_data)
    assert probe.node.count_subscribers(f"{ns}/image/compressed") == 0  # not before activate
    change(Transition.TRANSITION_ACTIVATE)
    assert state() == State.PRIMARY_STATE_ACTIVE

    results = probe.collect(SegmentationResult, f"{ns}/result")
    query = probe.publisher(String, f"{ns}/query", 10)
    h.wait_until(lambda: query.get_subscription_count() > 0, 20, "the query subscription", proc)
    query.publish(String(data="the cup"))
    h.publish_until(images, lambda: _jpeg(80, 60), lambda: bool(results.msgs), 30,
                    "a result for a JPEG frame", proc)
    result = results.msgs[0]
    assert (result.mask.width, result.mask.height) == (80, 60)
    assert result.header.frame_id == "jpeg_camera"

    change(Transition.TRANSITION_DEACTIVATE)
    h.wait_until(lambda: probe.node.count_subscribers(f"{ns}/image/compressed") == 0, 10,
                 "the image subscription to go away on deactivate", proc)
    change(Transition.TRANSITION_CLEANUP)
    assert state() == State.PRIMARY_STATE_UNCONFIGURED
    proc.assert_clean_stop()
