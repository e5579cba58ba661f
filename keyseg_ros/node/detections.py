"""Instances and their 3D geometry as standard messages: vision_msgs, geometry_msgs, PointCloud2.

Pure conversions (no node), like conversions.py. vision_msgs' conventions: 2D box centre and size
in pixels (the centre of a box over pixels x0..x1-1 is (x0 + x1) / 2, pixel edges at integers),
3D boxes in metres in the header's frame, `class_id` the keyword, `id` the track id.
"""

from __future__ import annotations

import array
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point, PointStamped, Pose, Quaternion, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    BoundingBox3D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
)

from keyseg_core.inference.geometry import TargetGeometry
from keyseg_core.inference.results import mask_box

_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]


def _hypothesis(keyword: str, score: float, position: Sequence[float] | None = None) -> ObjectHypothesisWithPose:
    result = ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=keyword, score=float(score)))
    if position is not None:
        result.pose.pose.position = Point(x=float(position[0]), y=float(position[1]), z=float(position[2]))
        result.pose.pose.orientation.w = 1.0
    return result


def per_instance(keyword: str | Sequence[str], count: int) -> list[str]:
    """One class_id per instance: a list as given (one per instance), a single keyword repeated."""
    return [keyword] * count if isinstance(keyword, str) else list(keyword)


def detections_2d(header: Header, instances: Sequence[np.ndarray], ids: Sequence[str], keyword: str | Sequence[str],
                  score: float) -> Detection2DArray:
    """One Detection2D per instance mask (none for no instances), with the frame's header; `keyword`:
    the class_id of all, or one per instance (several categories: "all the fruit")."""
    array = Detection2DArray(header=header)
    for mask, track_id, keyword in zip(instances, ids, per_instance(keyword, len(instances))):
        box = mask_box(mask)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        bbox = BoundingBox2D(size_x=float(x1 - x0), size_y=float(y1 - y0))
        bbox.center.position.x, bbox.center.position.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        array.detections.append(Detection2D(header=header, results=[_hypothesis(keyword, score)],
                                            bbox=bbox, id=track_id))
    return array


def detections_3d(header: Header, geometries: Sequence[TargetGeometry], centres: Sequence[np.ndarray],
                  box_centres: Sequence[np.ndarray], rotation_xyzw: Sequence[float], ids: Sequence[str],
                  keyword: str | Sequence[str], score: float) -> Detection3DArray:
    """One Detection3D per instance: the hypothesis' pose is the robust centre, the box is the
    points' axis-aligned box in the camera's optical frame, turned by `rotation_xyzw` when the
    header's frame is another (target_frame)."""
    array = Detection3DArray(header=header)
    x, y, z, w = (float(v) for v in rotation_xyzw)
    for geometry, centre, box_centre, track_id, keyword in zip(geometries, centres, box_centres, ids,
                                                               per_instance(keyword, len(geometries))):
        size = geometry.box_size
        bbox = BoundingBox3D(
            center=Pose(position=Point(x=float(box_centre[0]), y=float(box_centre[1]), z=float(box_centre[2])),
                        orientation=Quaternion(x=x, y=y, z=z, w=w)),
            size=Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2])))
        array.detections.append(Detection3D(header=header, results=[_hypothesis(keyword, score, centre)],
                                            bbox=bbox, id=track_id))
    return array


def point_stamped(header: Header, xyz: Sequence[float]) -> PointStamped:
    return PointStamped(header=header, point=Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2])))


def point_cloud(header: Header, points: np.ndarray) -> PointCloud2:
    """An unordered PointCloud2 (x, y, z float32) of Nx3 points."""
    points = np.ascontiguousarray(points, dtype="<f4").reshape(-1, 3)
    msg = PointCloud2(header=header, height=1, width=len(points), fields=_XYZ_FIELDS,
                      is_bigendian=False, point_step=12, row_step=12 * len(points), is_dense=True)
    data = array.array("B")
    data.frombytes(points.view(np.uint8).data)
    msg.data = data
    return msg
