"""`ros2 run keyseg_ros image_player PATH`: publish images or a video as a camera stream.

For demos and tests without a camera. PATH is a folder of images (played in name order), one
image (repeated), or a video (read with imageio; GIF works out of the box, other formats need
`pip install imageio[pyav]` or `imageio[ffmpeg]`). Frames go out as sensor_msgs/Image (or JPEG
sensor_msgs/CompressedImage with --compressed) with sensor-data QoS, stamped when published, in
the REP-103 optical frame `camera_optical_frame` by default.

As an RGB-D camera: --depth plays depth images registered to the colour frames (a folder paired
with PATH's frames in name order, or one file): 16-bit PNG or uint16 .npy in millimetres (16UC1),
float .npy or .tif in metres (32FC1). --intrinsics FX,FY,CX,CY publishes a camera_info. Each
frame's image, depth and camera_info share one header.
SIGINT or SIGTERM stops it between two frames: exit code 0, no traceback.
"""

from __future__ import annotations

import argparse
import array
import io
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from keyseg_ros.node import conversions, qos
from keyseg_ros.node.signals import StopSignals
from keyseg_ros.tools.common import wait_for_subscriber

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
DEPTH_SUFFIXES = {".png", ".npy", ".tif", ".tiff"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="image_player", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", type=Path, help="folder of images, one image, or a video file")
    parser.add_argument("--topic", default="/camera/image_raw",
                        help="image topic (default: /camera/image_raw; --compressed adds /compressed)")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second (default: 10)")
    parser.add_argument("--frame-id", default="camera_optical_frame",
                        help="header.frame_id, a REP-103 optical frame (default: camera_optical_frame)")
    parser.add_argument("--encoding", choices=("rgb8", "bgr8", "mono8"), default="rgb8")
    parser.add_argument("--resize", metavar="WxH", help="resize every frame, e.g. 1280x720")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--count", type=int, default=0, help="stop after this many frames (0: no limit)")
    parser.add_argument("--reliable", action="store_true", help="reliable QoS instead of best effort")
    parser.add_argument("--compressed", action="store_true", help="publish JPEG CompressedImage")
    parser.add_argument("--wait", type=float, default=0.0, metavar="S",
                        help="wait up to S seconds for a subscriber before the first frame")
    parser.add_argument("--depth", type=Path, metavar="PATH",
                        help="depth registered to the frames: a folder (paired in name order) or one file")
    parser.add_argument("--depth-topic", default="/camera/depth/image_raw",
                        help="depth topic (default: /camera/depth/image_raw)")
    parser.add_argument("--intrinsics", metavar="FX,FY,CX,CY",
                        help="publish a camera_info with this pinhole camera matrix (needed with --depth)")
    parser.add_argument("--info-topic", default="/camera/camera_info",
                        help="camera_info topic (default: /camera/camera_info)")
    return parser


def _rgb(frame: np.ndarray) -> np.ndarray:
    """Any decoder output (HxW gray, HxWx3, HxWx4) as HxWx3 uint8."""
    frame = np.asarray(frame, dtype=np.uint8)
    if frame.ndim == 2:
        return np.repeat(frame[:, :, None], 3, axis=2)
    return np.ascontiguousarray(frame[:, :, :3])


def read_frames(path: Path) -> Iterator[np.ndarray]:
    """HxWx3 uint8 RGB frames from a folder, an image or a video, in order."""
    from PIL import Image as PILImage

    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for file in files:
            with PILImage.open(file) as img:
                yield np.asarray(img.convert("RGB"))
    elif not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        with PILImage.open(path) as img:
            yield np.asarray(img.convert("RGB"))
    else:
        try:
            import imageio.v3 as iio
        except ImportError as exc:
            raise RuntimeError(f"{path}: reading videos needs imageio (pip install imageio)") from exc
        try:
            for frame in iio.imiter(path):
                yield _rgb(frame)
        except (OSError, ValueError) as exc:  # imageio's errors for missing plugins/bad files
            raise RuntimeError(f"{path}: cannot read video ({exc}); for mp4/avi/mkv install "
                               "imageio[pyav] or imageio[ffmpeg]") from exc


def _files(path: Path, suffixes: set[str], what: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
        if not files:
            raise FileNotFoundError(f"{path}: no {what} ({', '.join(sorted(suffixes))})")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return [path]


def read_depths(path: Path) -> Iterator[tuple[np.ndarray, str]]:
    """(depth array, encoding) pairs: 16UC1 millimetres or 32FC1 metres, as the files hold them."""
    from PIL import Image as PILImage

    for file in _files(path, DEPTH_SUFFIXES, "depth images"):
        if file.suffix.lower() == ".npy":
            depth = np.load(file)
        else:
            with PILImage.open(file) as img:
                depth = np.asarray(img)
        if depth.ndim != 2:
            raise RuntimeError(f"{file}: depth must be one channel, got shape {depth.shape}")
        if np.issubdtype(depth.dtype, np.floating):
            yield np.ascontiguousarray(depth, dtype=np.float32), "32FC1"
        elif np.issubdtype(depth.dtype, np.integer) and depth.min(initial=0) >= 0 and depth.max(initial=0) < 65536:
            yield np.ascontiguousarray(depth, dtype=np.uint16), "16UC1"
        else:
            raise RuntimeError(f"{file}: depth of type {depth.dtype} is neither millimetres (uint16) nor "
                               "metres (float)")


def depth_message(depth: np.ndarray, encoding: str, header: Header) -> Image:
    msg = Image(header=header, height=depth.shape[0], width=depth.shape[1], encoding=encoding,
                is_bigendian=0, step=depth.shape[1] * depth.itemsize)
    data = array.array("B")
    data.frombytes(depth.astype(depth.dtype.newbyteorder("<")).view(np.uint8).data)
    msg.data = data
    return msg


def camera_info(intrinsics: tuple[float, float, float, float], width: int, height: int,
                header: Header) -> CameraInfo:
    """An undistorted pinhole camera_info (plumb_bob with zero distortion)."""
    fx, fy, cx, cy = intrinsics
    return CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob",
                      d=[0.0] * 5, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                      r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                      p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0])


def _parse_intrinsics(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        fx, fy, cx, cy = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"image_player: error: --intrinsics must look like 300,300,160,120, got {text!r}")
    return fx, fy, cx, cy


def _resized(rgb: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (rgb.shape[1], rgb.shape[0]) == size:
        return rgb
    from PIL import Image as PILImage

    return np.asarray(PILImage.fromarray(rgb).resize(size))


def to_message(rgb: np.ndarray, header: Header, encoding: str, compressed: bool):
    """Image (in `encoding`) or JPEG CompressedImage of one RGB frame."""
    if compressed:
        from PIL import Image as PILImage

        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(buffer, format="JPEG", quality=90)
        msg = CompressedImage(header=header, format="jpeg")
        msg.data = array.array("B", buffer.getvalue())
        return msg
    if encoding == "mono8":
        gray = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
        return conversions.array_to_image(gray, header, "mono8")
    if encoding == "bgr8":
        return conversions.array_to_image(rgb[:, :, ::-1], header, "bgr8")
    return conversions.rgb_to_image(rgb, header)


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"image_player: error: --resize must look like 1280x720, got {text!r}")
    return width, height


def play(node: Node, opts: argparse.Namespace, stop: StopSignals | None = None) -> int:
    """Publish frames at `opts.rate` until the end, --count, or `stop`; returns the number sent."""
    stop = stop if stop is not None else StopSignals()
    size = _parse_size(opts.resize)
    intrinsics = _parse_intrinsics(opts.intrinsics)
    if opts.depth is not None and (size is not None or intrinsics is None):
        raise SystemExit("image_player: error: --depth needs --intrinsics and cannot be combined with --resize")
    msg_type, topic = (CompressedImage, opts.topic.rstrip("/") + "/compressed") if opts.compressed \
        else (Image, opts.topic)
    publisher = node.create_publisher(msg_type, topic, qos.camera(opts.reliable))
    depth_pub = node.create_publisher(Image, opts.depth_topic, qos.camera(opts.reliable)) \
        if opts.depth is not None else None
    info_pub = node.create_publisher(CameraInfo, opts.info_topic, qos.camera(opts.reliable)) \
        if intrinsics is not None else None
    wait_for_subscriber(node, publisher, opts.wait, stop)  # then plays even without one
    period, sent, next_time = 1.0 / opts.rate, 0, time.monotonic()
    while not stop:
        depths = read_depths(opts.depth) if opts.depth is not None else None
        for frame in read_frames(opts.path):
            if stop:
                return sent
            depth = next(depths, None) if depths is not None else None
            if depths is not None and depth is None:
                break  # fewer depth images than frames: the pairs end here
            frame = _resized(frame, size)
            header = Header(frame_id=opts.frame_id, stamp=node.get_clock().now().to_msg())
            publisher.publish(to_message(frame, header, opts.encoding, opts.compressed))
            if depth is not None:
                depth_pub.publish(depth_message(*depth, header))
            if info_pub is not None:
                info_pub.publish(camera_info(intrinsics, frame.shape[1], frame.shape[0], header))
            sent += 1
            if opts.count and sent >= opts.count:
                return sent
            next_time += period
            stop.sleep(next_time - time.monotonic())
        if not opts.loop:
            return sent
    return sent


def main(args: list[str] | None = None) -> int:
    argv = remove_ros_args(sys.argv if args is None else args)[1:]
    opts = build_parser().parse_args(argv)
    if opts.rate <= 0:
        print("image_player: error: --rate must be > 0", file=sys.stderr)
        return 2
    with StopSignals() as stop:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = None
        try:
            node = Node("keyseg_image_player")
            sent = play(node, opts, stop)
            if stop:
                node.get_logger().info(f"{stop.received} received: stopping")
            node.get_logger().info(f"published {sent} frame(s)")
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"image_player: error: {exc}", file=sys.stderr)
            return 1
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
