"""Depth images and camera_info as arrays, with the reasons a robot's inputs can be refused.

The geometry itself is in keyseg_core.inference.geometry (no ROS); this module only reads the messages and
checks that they fit the colour image they were synchronised with.
"""

from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image

from keyseg_core.inference.geometry import DEPTH_DTYPE, Intrinsics, depth_to_metres


class BadDepthError(ValueError):
    """A depth image or camera_info that cannot be used with its frame; the message says why."""


def depth_to_array(msg: Image, width: int, height: int) -> np.ndarray:
    """HxW float32 metres (NaN: no reading) of a depth image registered to a width x height frame."""
    dtype = DEPTH_DTYPE.get(msg.encoding)
    if dtype is None:
        raise BadDepthError(f"depth encoding {msg.encoding!r} is not supported (16UC1 in millimetres, "
                            "32FC1 in metres)")
    if (msg.width, msg.height) != (width, height):
        raise BadDepthError(f"depth is {msg.width}x{msg.height} but the image is {width}x{height}: "
                            "depth must be registered (aligned) to the colour image")
    row = msg.width * dtype.itemsize
    if msg.step < row or len(msg.data) < msg.step * msg.height:
        raise BadDepthError(f"depth data is too short ({len(msg.data)} bytes, step {msg.step}) for "
                            f"{msg.width}x{msg.height} {msg.encoding}")
    rows = np.frombuffer(msg.data, np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    raw = rows[:, :row].copy().view(dtype.newbyteorder(">" if msg.is_bigendian else "<"))
    return depth_to_metres(raw.reshape(msg.height, msg.width), msg.encoding)


def intrinsics(info: CameraInfo, width: int, height: int) -> Intrinsics:
    """Intrinsics of the colour frame from its camera_info (K; the image is taken as rectified)."""
    if (info.width, info.height) not in ((width, height), (0, 0)):
        raise BadDepthError(f"camera_info is for {info.width}x{info.height} but the image is "
                            f"{width}x{height}")
    try:
        return Intrinsics.from_k(info.k)
    except ValueError as exc:
        raise BadDepthError(f"camera_info: {exc} (is the camera calibrated?)") from None
