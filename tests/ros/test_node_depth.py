"""keyseg_node over real DDS with depth and camera_info: the target in 3D, detections, bad input.

The node runs config:tiny with mask_threshold -1000, so every answer's mask is the whole frame and
its 3D centre is known from the depth alone (a random-weight model's masks are not). Frames come
from the image player (an RGB-D camera playing generated scenes with plane depth) or from the
probe (bad input).
"""

from __future__ import annotations

import array

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402

from keyseg_core.inference.geometry import Intrinsics, target_geometry  # noqa: E402
from keyseg_core.scenes.depth import plane_depth, to_millimetres  # noqa: E402

WIDTH, HEIGHT = 320, 240
INTRINSICS = "300,300,160,120"
K = Intrinsics(300.0, 300.0, 160.0, 120.0)
QUERY = "the thing in front of the camera"


@pytest.fixture(scope="module")
def scenes():
    from keyseg_core.scenes import make_sample

    return [make_sample(3, "test", i).scene for i in range(3)]


@pytest.fixture(scope="module")
def node(probe, workdir, ros_install, scenes):
    from geometry_msgs.msg import PointStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    ns = h.unique_namespace()
    proc = h.Process.start("keyseg_node", [
        "--ros-args", "-r", f"__ns:={ns}", "-p", "model:=config:tiny", "-p", "mask_threshold:=-1000.0",
        "-p", "image_reliability:=reliable", "-p", "diagnostics_period:=0.3"], workdir)
    try:
        session = h.Session(probe, proc, ns)
        reliable = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        session.camera = probe.publisher(Image, f"{ns}/image", reliable)
        session.depth = probe.publisher(Image, f"{ns}/depth", reliable)
        session.info = probe.publisher(CameraInfo, f"{ns}/camera_info", reliable)
        session.points = probe.collect(PointStamped, f"{ns}/target_point")
        session.clouds = probe.collect(PointCloud2, f"{ns}/target_cloud")
        session.boxes = probe.collect(Detection3DArray, f"{ns}/detections_3d")
        session.detections = probe.collect(Detection2DArray, f"{ns}/detections")
        h.wait_until(lambda: all(p.get_subscription_count() > 0 for p in
                                 (session.camera, session.depth, session.info, session.query)),
                     60, "keyseg_node to subscribe to image, depth, camera_info and query", proc)
        session.scene = scenes[0]
        session.send_query(QUERY)
    except BaseException:
        proc.stop()  # a failed set-up must not leave the node running
        raise
    yield session
    proc.assert_clean_stop()


def _key(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _expected_centre(depth_m: np.ndarray) -> np.ndarray:
    geometry, _ = target_geometry(np.ones(depth_m.shape, bool), depth_m, K, max_depth=10.0, erode_px=2,
                                  min_points=20)
    return geometry.centre


def test_target_point_arrives_for_each_answered_frame_from_the_image_player(node, scenes, workdir, tmp_path):
    from PIL import Image as PILImage

    color, depth = tmp_path / "color", tmp_path / "depth"
    color.mkdir()
    depth.mkdir()
    centres = []
    for i, scene in enumerate(scenes):
        PILImage.fromarray(scene.image).save(color / f"{i:02d}.png")
        metres = plane_depth(scene.labels, rng=np.random.default_rng(i), holes=0.05)
        PILImage.fromarray(to_millimetres(metres)).save(depth / f"{i:02d}.png")  # 16-bit PNG, mm
        centres.append(_expected_centre(np.where(to_millimetres(metres) > 0, to_millimetres(metres) / 1000.0,
                                                 np.nan)))
    player = h.Process.start("image_player", [
        str(color), "--topic", f"{node.ns}/image", "--depth", str(depth), "--depth-topic", f"{node.ns}/depth",
        "--intrinsics", INTRINSICS, "--info-topic", f"{node.ns}/camera_info", "--rate", "10", "--loop",
        "--reliable"], workdir)
    try:
        def answered():
            return [r for r in node.results.msgs if r.query == QUERY and r.header.frame_id == "camera_optical_frame"]

        h.wait_until(lambda: len(answered()) >= 6, 60, "6 answered frames from the image player", node.proc)
        frames = answered()[:6]
        wanted = {_key(r) for r in frames}
        h.wait_until(lambda: wanted <= {_key(p) for p in node.points.msgs}
                     and wanted <= {_key(b) for b in node.boxes.msgs}
                     and wanted <= {_key(c) for c in node.clouds.msgs}, 15,
                     "target_point, detections_3d and target_cloud of each answered frame", node.proc)
    finally:
        player.assert_clean_stop()
    for result in frames:
        point = node.points.find(lambda p: _key(p) == _key(result))
        assert point.header == result.header
        xyz = np.array([point.point.x, point.point.y, point.point.z])
        assert min(np.abs(xyz - c).max() for c in centres) < 1e-3, (xyz, centres)
        cloud = node.clouds.find(lambda c: _key(c) == _key(result))
        assert cloud.width > 1000 and cloud.header.frame_id == "camera_optical_frame"
        boxes = node.boxes.find(lambda b: _key(b) == _key(result))
        (box,) = boxes.detections
        assert box.results[0].hypothesis.class_id == result.keyword
        assert box.bbox.size.z == pytest.approx(2.0, abs=1e-3)  # nearest object 1 m, background 3 m
    detections = [node.detections.find(lambda d: _key(d) == _key(r)) for r in frames]
    assert all(d is not None and len(d.detections) == 1 for d in detections)
    assert len({d.detections[0].id for d in detections}) == 1  # one track: the id holds
    (first,) = detections[0].detections
    assert (first.bbox.center.position.x, first.bbox.center.position.y, first.bbox.size_x, first.bbox.size_y) == \
        (160.0, 120.0, 320.0, 240.0)
    keyword = node.keywords.find(lambda k: _key(k) == _key(frames[0]))
    assert keyword.header == frames[0].header and keyword.keyword == frames[0].keyword
    assert keyword.query == QUERY


class Triple:
    """One frame the probe publishes as an RGB-D camera would: image, depth and camera_info."""

    def __init__(self, scene, *, depth: str = "16UC1", depth_size=(WIDTH, HEIGHT), fx: float = 300.0,
                 info: bool = True, frame_id: str = "probe_optical_frame") -> None:
        from sensor_msgs.msg import CameraInfo, Image

        self.image = h.make_image(WIDTH, HEIGHT, frame_id=frame_id)
        header = self.image.header
        metres = plane_depth(scene.labels)[: depth_size[1], : depth_size[0]]
        if depth == "16UC1":
            raw = to_millimetres(metres)
        elif depth == "32FC1":
            raw = metres
        else:  # an encoding that is not depth
            raw = np.zeros((depth_size[1], depth_size[0] * 3), np.uint8)
        self.depth = Image(header=header, width=depth_size[0], height=depth_size[1], encoding=depth,
                           step=raw.shape[1] * raw.itemsize, data=array.array("B", raw.tobytes()))
        self.info = CameraInfo(header=header, width=WIDTH, height=HEIGHT,
                               k=[fx, 0.0, 160.0, 0.0, fx, 120.0, 0.0, 0.0, 1.0]) if info else None

    def publish(self, node) -> None:
        node.camera.publish(self.image)
        node.depth.publish(self.depth)
        if self.info is not None:
            node.info.publish(self.info)


def _stream(node, condition, what: str, **frame) -> set[tuple[int, int]]:
    """Publish a Triple every 0.2 s until `condition(stamps sent)` holds; the stamps sent."""
    sent: set[tuple[int, int]] = set()

    class Camera:
        @staticmethod
        def publish(triple) -> None:
            sent.add(_key(triple.image))
            triple.publish(node)

    h.publish_until(Camera, lambda: Triple(node.scene, **frame), lambda: condition(sent), 60, what, node.proc,
                    period=0.2)
    return sent


def _said_once_without_3d(node, expected: str, counter: str, **frame) -> None:
    """Bad frames until the node has said `expected` and answered 3 of them in 2D (results and
    detections); the line must come once, no 3D output for them, and `counter` must grow."""
    before = node.count(counter)
    sent = _stream(node, lambda sent: expected in node.proc.output()
                   and len([r for r in node.results.msgs if _key(r) in sent]) >= 3
                   and node.detections.find(lambda d: _key(d) in sent) is not None,
                   f"the log line {expected!r} and 3 answered frames", **frame)
    lines = [line for line in node.proc.output().splitlines() if expected in line]
    assert len(lines) == 1, lines
    assert not any(_key(p) in sent for p in node.points.msgs)
    node.wait_count_above(counter, before)


def _3d_resumes(node) -> None:
    _stream(node, lambda sent: any(_key(p) in sent for p in node.points.msgs), "a target_point after good input")


@pytest.mark.parametrize("case", ["size", "encoding", "zero_focal", "no_camera_info"])
def test_bad_depth_input_is_said_once_and_2d_outputs_keep_flowing(node, case):
    frame, expected = {
        "size": ({"depth_size": (160, 120)}, "depth is 160x120 but the image is 320x240"),
        "encoding": ({"depth": "rgb8"}, "depth encoding 'rgb8' is not supported"),
        "zero_focal": ({"fx": 0.0}, "zero or non-finite focal length"),
        "no_camera_info": ({"info": False}, f"depth arrives on '{node.ns}/depth' but no camera_info"),
    }[case]
    _said_once_without_3d(node, expected, "bad_depth", **frame)
    _3d_resumes(node)


def test_unknown_target_frame_is_said_once_and_2d_outputs_keep_flowing(node):
    assert node.set_parameter("target_frame", "no_such_frame").successful
    try:
        _said_once_without_3d(node, "target_frame 'no_such_frame'", "tf_failures")
    finally:
        assert node.set_parameter("target_frame", "").successful
    _3d_resumes(node)


def test_a_new_query_starts_a_new_track_id(node):
    def track_id(query: str) -> str:
        """Send `query`, stream frames until one answered for it has its detections; their id."""
        def answered(sent):
            for result in list(node.results.msgs):
                if result.query == query and _key(result) in sent:
                    found = node.detections.find(lambda d: _key(d) == _key(result))
                    if found is not None:
                        return found.detections[0].id
            return None

        ids: list[str] = []

        def found(sent) -> bool:
            track = answered(sent)
            if track is not None:
                ids.append(track)
            return track is not None

        node.send_query(query)
        _stream(node, found, f"a detection answered for {query!r}")
        return ids[-1]

    other = track_id("the other thing")
    again = track_id(QUERY)  # back to the module's query: a new query again, so a new id
    assert other != again


def test_refused_3d_parameters_name_themselves(node):
    result = node.set_parameter("target_frame", "/map")
    assert not result.successful and "parameter 'target_frame'" in result.reason
    result = node.set_parameter("cloud_decimation", 0)
    assert not result.successful and "parameter 'cloud_decimation'" in result.reason
