"""The 3D stage and the standard messages, offline: real message types, no DDS, no node process.

Depth comes from generated scenes as planes (keyseg_core.scenes.depth: background 3 m, object k
at 1 + 0.25 k m, 0 and NaN holes) with CameraInfo fx = fy = 300 at 320x240.
"""

from __future__ import annotations

import array

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402

from keyseg_core.inference.geometry import Intrinsics  # noqa: E402
from keyseg_core.scenes.depth import analytic_centroid, object_depth, plane_depth, to_millimetres  # noqa: E402

WIDTH, HEIGHT = 320, 240
K = Intrinsics(300.0, 300.0, 160.0, 120.0)


@pytest.fixture(scope="module")
def scene():
    from keyseg_core.scenes import make_sample

    return make_sample(3, "test", 4).scene


@pytest.fixture(scope="module")
def msgs(ros_install):
    """The message modules, imported from the install space."""
    import types

    from geometry_msgs.msg import TransformStamped
    from sensor_msgs.msg import CameraInfo, Image
    from std_msgs.msg import Header

    return types.SimpleNamespace(CameraInfo=CameraInfo, Image=Image, Header=Header,
                                 TransformStamped=TransformStamped)


class Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, message: str) -> None:
        self.lines.append(message)


def _header(msgs, sec: int, nanosec: int = 0, frame_id: str = "camera_optical_frame"):
    header = msgs.Header(frame_id=frame_id)
    header.stamp.sec, header.stamp.nanosec = sec, nanosec
    return header


def _depth_msg(msgs, header, depth_m: np.ndarray, encoding: str, bigendian: bool = False):
    raw = to_millimetres(depth_m) if encoding == "16UC1" else depth_m.astype(np.float32)
    raw = raw.astype(raw.dtype.newbyteorder(">" if bigendian else "<"))
    msg = msgs.Image(header=header, height=raw.shape[0], width=raw.shape[1], encoding=encoding,
                     is_bigendian=int(bigendian), step=raw.shape[1] * raw.itemsize)
    msg.data = array.array("B", raw.tobytes())
    return msg


def _info(msgs, header, fx: float = 300.0, fy: float = 300.0):
    return msgs.CameraInfo(header=header, width=WIDTH, height=HEIGHT,
                           k=[fx, 0.0, 160.0, 0.0, fy, 120.0, 0.0, 0.0, 1.0])


def _image(msgs, header):
    return msgs.Image(header=header, width=WIDTH, height=HEIGHT, encoding="rgb8", step=WIDTH * 3)


def _answer_frame(stage, msgs, sec: int, masks, depth, make_depth=None, make_info=None) -> None:
    """One answered frame at stamp `sec` with its depth (32FC1 unless `make_depth`) and camera_info."""
    header = _header(msgs, sec)
    stage.answer(header, masks)
    depth_msg = make_depth(msgs, header, depth) if make_depth else _depth_msg(msgs, header, depth, "32FC1")
    stage.target3d.on_synced(_image(msgs, header), depth_msg, (make_info or _info)(msgs, header))


class Stage:
    """A Target3D with recording publish/log, as keyseg_node wires it."""

    def __init__(self, *, target_frame: str = "", tf_buffer=None, min_points: int = 20) -> None:
        from keyseg_ros.node.diagnostics import NodeStats
        from keyseg_ros.node.target3d import Settings, Target3D

        self.outputs, self.logger, self.stats = [], Logger(), NodeStats()
        settings = Settings(max_depth=10.0, erode_px=2, min_points=min_points, decimation=4,
                            target_frame=target_frame, tf_timeout=0.05)
        self.target3d = Target3D(settings=lambda: settings, publish=self._publish, stats=self.stats,
                                 logger=self.logger, tf_buffer=tf_buffer, depth_topic="/cam/depth",
                                 info_topic="/cam/camera_info")

    def _publish(self, outputs) -> bool:
        self.outputs.append(outputs)
        return True

    def answer(self, header, masks, keyword: str = "cup"):
        from keyseg_ros.node.target3d import Answer

        ids = [str(i + 1) for i in range(len(masks))]
        self.target3d.frame_answered(Answer(header, WIDTH, HEIGHT, list(masks), ids, keyword, 0.9))


def _objects(scene):
    return [(k, scene.labels == k + 1) for k in range(len(scene.objects)) if (scene.labels == k + 1).sum() >= 60]


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_centroid_point_cloud_and_boxes_from_synchronised_depth(msgs, scene, encoding):
    depth = plane_depth(scene.labels, rng=np.random.default_rng(0), holes=0.05)
    objects = _objects(scene)
    stage = Stage()
    header = _header(msgs, 10)
    stage.answer(header, [m for _, m in objects])  # the model first: the depth completes the pair
    assert stage.outputs == []
    stage.target3d.on_synced(_image(msgs, header), _depth_msg(msgs, header, depth, encoding, encoding == "16UC1"),
                             _info(msgs, header))
    (out,) = stage.outputs
    k0, mask0 = objects[0]
    truth = analytic_centroid(mask0, object_depth(k0), K)
    point = out.point.point
    assert np.linalg.norm([point.x - truth[0], point.y - truth[1], point.z - truth[2]]) < 0.01
    assert out.point.header == header and out.cloud.header == header and out.detections.header == header
    assert len(out.detections.detections) == len(objects)
    for det, (k, mask) in zip(out.detections.detections, objects):
        truth = analytic_centroid(mask, object_depth(k), K)
        pose = det.results[0].pose.pose.position
        assert np.linalg.norm([pose.x - truth[0], pose.y - truth[1], pose.z - truth[2]]) < 0.01
        assert det.results[0].hypothesis.class_id == "cup" and det.bbox.size.z == pytest.approx(0, abs=1e-5)
        assert det.bbox.center.position.z == pytest.approx(object_depth(k), abs=1e-5)
    cloud = np.frombuffer(bytes(out.cloud.data), "<f4").reshape(-1, 3)
    assert out.cloud.width == len(cloud) > 0 and out.cloud.point_step == 12
    np.testing.assert_allclose(cloud[:, 2], object_depth(k0), atol=1e-3)
    assert stage.stats.counts["targets_3d"] == 1 and stage.stats.counts["invalid_depth_pixels"] > 0


def test_16uc1_and_32fc1_give_the_same_answer(msgs, scene):
    from keyseg_ros.node.depth import depth_to_array

    depth = plane_depth(scene.labels, rng=np.random.default_rng(1), holes=0.05)
    header = _header(msgs, 1)
    mm = depth_to_array(_depth_msg(msgs, header, depth, "16UC1"), WIDTH, HEIGHT)
    m = depth_to_array(_depth_msg(msgs, header, depth, "32FC1", bigendian=True), WIDTH, HEIGHT)
    np.testing.assert_array_equal(np.isnan(mm), np.isnan(m))
    np.testing.assert_allclose(mm[~np.isnan(mm)], m[~np.isnan(m)], atol=1e-6)


def test_a_stamp_skew_beyond_sync_slop_gives_no_3d_output(msgs, scene):
    from keyseg_ros.node.sync import ApproximateSync

    depth = plane_depth(scene.labels)
    stage = Stage()
    sync = ApproximateSync(3, 10, 0.05, stage.target3d.on_synced)
    frame, skewed = _header(msgs, 20), _header(msgs, 20, 60_000_000)  # 60 ms > 50 ms
    stage.answer(frame, [m for _, m in _objects(scene)][:1])
    sync.add(0, _image(msgs, frame))
    sync.add(1, _depth_msg(msgs, skewed, depth, "32FC1"))
    sync.add(2, _info(msgs, skewed))
    assert stage.outputs == []
    within = _header(msgs, 20, 40_000_000)  # 40 ms: matched
    sync.add(1, _depth_msg(msgs, within, depth, "32FC1"))
    sync.add(2, _info(msgs, within))
    assert len(stage.outputs) == 1 and stage.outputs[0].point.header == frame


def test_sync_drops_are_counted_once_depth_flows(msgs, scene):
    stage = Stage()
    stage.target3d.on_depth(None)
    stage.target3d.on_info(None)
    for sec in range(12):  # no depth set ever matches these frames
        stage.answer(_header(msgs, 100 + sec), [scene.labels > 0])
    assert stage.stats.counts["depth_sync_drops"] == 12 - 8 and stage.outputs == []


def test_a_static_transform_moves_the_point_exactly(msgs, scene):
    from rclpy.duration import Duration

    class StandInBuffer:
        """tf2_ros.Buffer's lookup_transform, holding one static transform."""

        def __init__(self, transform) -> None:
            self.transform, self.calls = transform, []

        def lookup_transform(self, target, source, time, timeout):
            self.calls.append((target, source, time, timeout))
            if (target, source) != (self.transform.header.frame_id, self.transform.child_frame_id):
                raise LookupError(f'"{target}" passed to lookupTransform argument target_frame does not exist')
            return self.transform

    static = msgs.TransformStamped()
    static.header.frame_id, static.child_frame_id = "base_link", "camera_optical_frame"
    static.transform.translation.x, static.transform.translation.y, static.transform.translation.z = 0.1, -0.2, 1.5
    # optical (z forward, x right, y down) -> base (x forward, y left, z up)
    q = static.transform.rotation
    q.x, q.y, q.z, q.w = -0.5, 0.5, -0.5, 0.5
    depth = plane_depth(scene.labels, rng=np.random.default_rng(2), holes=0.05)
    masks = [m for _, m in _objects(scene)]
    plain, moved = Stage(), Stage(target_frame="base_link", tf_buffer=StandInBuffer(static))
    for stage in (plain, moved):
        _answer_frame(stage, msgs, 30, masks, depth)
    p = plain.outputs[0].point.point
    m = moved.outputs[0].point.point
    # the rotation takes optical (x, y, z) to base (z, -x, -y); then the translation
    assert (m.x, m.y, m.z) == pytest.approx((p.z + 0.1, -p.x - 0.2, -p.y + 1.5), abs=1e-9)
    assert moved.outputs[0].point.header.frame_id == "base_link"
    assert moved.outputs[0].point.header.stamp == plain.outputs[0].point.header.stamp
    box = moved.outputs[0].detections.detections[0].bbox.center.orientation
    assert (box.x, box.y, box.z, box.w) == (-0.5, 0.5, -0.5, 0.5)
    target, source, time, timeout = moved.target3d._tf_buffer.calls[0]
    assert (target, source) == ("base_link", "camera_optical_frame")
    assert time.nanoseconds == 30 * 10**9 and timeout == Duration(seconds=0.05)

    unknown = Stage(target_frame="no_such_frame", tf_buffer=StandInBuffer(static))
    for sec in range(3):
        _answer_frame(unknown, msgs, 40 + sec, masks, depth)
    assert unknown.outputs == [] and unknown.stats.counts["tf_failures"] == 3
    assert len(unknown.logger.lines) == 1 and "'no_such_frame'" in unknown.logger.lines[0]


def test_target_frame_without_tf2_is_said_once(msgs, scene):
    depth = plane_depth(scene.labels)
    stage = Stage(target_frame="map", tf_buffer=None)
    for sec in range(3):
        _answer_frame(stage, msgs, 50 + sec, [scene.labels > 0], depth)
    assert stage.outputs == [] and stage.stats.counts["tf_failures"] == 3
    assert len(stage.logger.lines) == 1 and "target_frame 'map'" in stage.logger.lines[0]


def _rgb_depth(msgs, header, depth):
    return msgs.Image(header=header, width=WIDTH, height=HEIGHT, encoding="rgb8", step=WIDTH * 3,
                      data=array.array("B", bytes(WIDTH * HEIGHT * 3)))


BAD = {
    "depth of another size": (lambda m, h, d: _depth_msg(m, h, d[:120, :160], "32FC1"), _info,
                              "depth is 160x120 but the image is 320x240"),
    "depth of another encoding": (_rgb_depth, _info, "depth encoding 'rgb8' is not supported"),
    "zero focal length": (lambda m, h, d: _depth_msg(m, h, d, "16UC1"), lambda m, h: _info(m, h, fx=0.0, fy=0.0),
                          "zero or non-finite focal length"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_depth_is_said_once_and_counted(msgs, scene, case):
    make_depth, make_info, expected = BAD[case]
    depth = plane_depth(scene.labels)
    stage = Stage()
    for sec in range(4):
        _answer_frame(stage, msgs, 60 + sec, [scene.labels > 0], depth, make_depth, make_info)
    assert stage.outputs == [] and stage.stats.counts["bad_depth"] == 4
    assert len(stage.logger.lines) == 1 and expected in stage.logger.lines[0], stage.logger.lines
    _answer_frame(stage, msgs, 70, [scene.labels > 0], depth)  # good input again: 3D outputs resume
    assert len(stage.outputs) == 1


def test_depth_without_camera_info_is_said_once(msgs, scene):
    stage = Stage()
    stage.target3d.on_depth(None)
    for sec in range(5):
        stage.answer(_header(msgs, 80 + sec), [scene.labels > 0])
    assert stage.outputs == [] and stage.stats.counts["bad_depth"] == 5
    assert len(stage.logger.lines) == 1
    assert "depth arrives on '/cam/depth' but no camera_info on '/cam/camera_info'" in stage.logger.lines[0]


def test_too_few_valid_points_give_no_3d_output_said_once(msgs, scene):
    depth = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    stage = Stage()
    for sec in range(3):
        _answer_frame(stage, msgs, 90 + sec, [scene.labels > 0], depth)
    assert stage.outputs == [] and stage.stats.counts["too_few_points"] == 3
    assert len(stage.logger.lines) == 1 and "fewer than min_points=20" in stage.logger.lines[0]


def test_detection2d_array_from_synthetic_masks(msgs):
    from keyseg_core.inference.instances import split_instances
    from keyseg_ros.node.detections import detections_2d

    header = _header(msgs, 5)
    assert detections_2d(header, split_instances(np.zeros((HEIGHT, WIDTH), bool), "components"), [], "cup",
                         0.5).detections == []
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[10:30, 20:60] = True  # 40x20 at (20, 10)
    mask[100:200, 150:170] = True  # 20x100 at (150, 100)
    instances = split_instances(mask, "components")
    array_msg = detections_2d(header, instances, ["7", "8"], "cup", 0.75)
    assert array_msg.header == header and len(array_msg.detections) == 2
    big, small = array_msg.detections
    assert (big.bbox.center.position.x, big.bbox.center.position.y, big.bbox.size_x, big.bbox.size_y) == \
        (160.0, 150.0, 20.0, 100.0)
    assert (small.bbox.center.position.x, small.bbox.center.position.y, small.bbox.size_x, small.bbox.size_y) == \
        (40.0, 20.0, 40.0, 20.0)
    assert [d.id for d in array_msg.detections] == ["7", "8"]
    assert all(d.header == header and d.results[0].hypothesis.class_id == "cup"
               and d.results[0].hypothesis.score == 0.75 for d in array_msg.detections)
    assert len(detections_2d(header, split_instances(mask, "mask"), ["1"], "cup", 0.75).detections) == 1


def test_vision_msgs_fields_match_the_released_definitions(ros_install):
    """The wire-compatible build (or the real package) has vision_msgs 4.1.1's fields in order."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection3D, ObjectHypothesisWithPose

    assert list(Detection2D.get_fields_and_field_types()) == ["header", "results", "bbox", "id"]
    assert Detection2D.get_fields_and_field_types()["results"] == "sequence<vision_msgs/ObjectHypothesisWithPose>"
    assert list(Detection3D.get_fields_and_field_types().values()) == [
        "std_msgs/Header", "sequence<vision_msgs/ObjectHypothesisWithPose>", "vision_msgs/BoundingBox3D", "string"]
    assert ObjectHypothesisWithPose.get_fields_and_field_types() == {
        "hypothesis": "vision_msgs/ObjectHypothesis", "pose": "geometry_msgs/PoseWithCovariance"}
    assert BoundingBox2D.get_fields_and_field_types() == {
        "center": "vision_msgs/Pose2D", "size_x": "double", "size_y": "double"}


def test_image_player_reads_depth_in_millimetres_and_metres(msgs, tmp_path):
    from PIL import Image as PILImage

    from keyseg_ros.node.depth import depth_to_array, intrinsics
    from keyseg_ros.tools.image_player import camera_info, depth_message, read_depths

    metres = np.full((HEIGHT, WIDTH), 1.25, np.float32)
    metres[0, 0] = np.nan
    PILImage.fromarray(to_millimetres(metres)).save(tmp_path / "a.png")
    np.save(tmp_path / "b.npy", metres)
    np.save(tmp_path / "c.npy", to_millimetres(metres))
    read = list(read_depths(tmp_path))
    assert [encoding for _, encoding in read] == ["16UC1", "32FC1", "16UC1"]
    header = _header(msgs, 7)
    info = camera_info((300.0, 300.0, 160.0, 120.0), WIDTH, HEIGHT, header)
    assert intrinsics(info, WIDTH, HEIGHT) == K and info.header == header
    for depth, encoding in read:
        back = depth_to_array(depth_message(depth, encoding, header), WIDTH, HEIGHT)
        assert np.isnan(back[0, 0]) and np.allclose(back[1:], 1.25)
