"""ROS messages <-> numpy arrays, without cv_bridge (not available from PyPI for ROS 2), and the
checks an incoming image or query must pass first (`BadImageError`, `query_problem`).

Every function here is pure (no node, no publishing) so the benchmark can time exactly what the
node pays per frame. Incoming images are viewed with `np.frombuffer` (no per-byte Python work);
outgoing ones are filled through `array.array`, the one type rclpy takes without checking each
byte in Python.
"""

from __future__ import annotations

import array
import io
from collections.abc import Mapping

import numpy as np
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from keyseg_ros.msg import KeywordCandidate, SegmentationResult, StageTiming

# Encodings accepted from cameras, with their channel counts.
ENCODING_CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


class BadImageError(ValueError):
    """An incoming image that cannot be used; the message says why in words a user can act on."""


def check_size(width: int, height: int, max_size: int) -> None:
    """Refuse zero-size frames and frames wider or taller than `max_size` pixels."""
    if width <= 0 or height <= 0:
        raise BadImageError(f"zero-size image ({width}x{height})")
    if width > max_size or height > max_size:
        raise BadImageError(
            f"image {width}x{height} is larger than max_image_size={max_size} in one dimension"
        )


def query_problem(text: str, max_length: int) -> str | None:
    """Why a query is refused, or None. Invalid UTF-8 reaches rclpy as U+FFFD replacements."""
    if not text.strip():
        return "empty or whitespace-only query"
    if "\ufffd" in text:
        return "query is not valid UTF-8 (undecodable bytes)"
    if len(text) > max_length:
        return f"query has {len(text)} characters, more than max_query_length={max_length}"
    return None


def image_to_rgb(msg: Image, max_size: int) -> np.ndarray:
    """HxWx3 uint8 RGB array from a sensor_msgs/Image; a view of the message buffer for rgb8."""
    channels = ENCODING_CHANNELS.get(msg.encoding)
    if channels is None:
        raise BadImageError(
            f"unsupported encoding {msg.encoding!r} (supported: {', '.join(ENCODING_CHANNELS)})"
        )
    width, height, step = msg.width, msg.height, msg.step
    check_size(width, height, max_size)
    if step < width * channels:
        raise BadImageError(
            f"step {step} is smaller than width*channels = {width * channels} for {msg.encoding}"
        )
    if len(msg.data) < step * height:
        raise BadImageError(
            f"data has {len(msg.data)} bytes, fewer than step*height = {step * height}"
        )
    rows = np.frombuffer(msg.data, np.uint8, count=step * height).reshape(height, step)
    pixels = rows[:, : width * channels].reshape(height, width, channels)
    if msg.encoding == "rgb8":
        return pixels
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding == "rgba8":
        return np.ascontiguousarray(pixels[:, :, :3])
    return np.ascontiguousarray(pixels[:, :, 2::-1])  # bgr8, bgra8


def compressed_to_rgb(msg: CompressedImage, max_size: int) -> np.ndarray:
    """HxWx3 uint8 RGB array from a sensor_msgs/CompressedImage (JPEG, PNG, ...)."""
    from PIL import Image as PILImage  # only compressed input pays for the import

    if len(msg.data) == 0:
        raise BadImageError("compressed image has no data")
    try:
        with PILImage.open(io.BytesIO(msg.data.tobytes())) as img:
            check_size(img.width, img.height, max_size)
            return np.asarray(img.convert("RGB"))
    except BadImageError:
        raise
    except Exception as exc:  # PIL raises several unrelated types for corrupt data
        raise BadImageError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from exc


def array_to_image(pixels: np.ndarray, header: Header, encoding: str) -> Image:
    """sensor_msgs/Image of an HxW or HxWxC uint8 array already in `encoding`'s channel order."""
    msg = Image(header=header)
    msg.height, msg.width = int(pixels.shape[0]), int(pixels.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * (pixels.shape[2] if pixels.ndim == 3 else 1)
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(pixels).data)
    msg.data = data
    return msg


def rgb_to_image(rgb: np.ndarray, header: Header) -> Image:
    """rgb8 sensor_msgs/Image from an HxWx3 uint8 array."""
    return array_to_image(rgb, header, "rgb8")


def mask_to_image(mask: np.ndarray, header: Header) -> Image:
    """mono8 sensor_msgs/Image with 0 (background) and 255 (mask) from an HxW bool array."""
    return array_to_image(np.multiply(mask, 255, dtype=np.uint8), header, "mono8")


def box_to_roi(box: tuple[int, int, int, int] | None) -> RegionOfInterest:
    """RegionOfInterest from an (x0, y0, x1, y1) box with exclusive x1/y1; zeros for None."""
    if box is None:
        return RegionOfInterest()
    x0, y0, x1, y1 = box
    return RegionOfInterest(
        x_offset=int(x0), y_offset=int(y0), width=int(x1 - x0), height=int(y1 - y0)
    )


def to_result(
    prediction,  # keyseg_core.inference.results.Prediction (not imported: keeps this module torch-free)
    *,
    header: Header,
    query: str,
    mask: Image,
    model: str,
    node_timings_ms: Mapping[str, float],
) -> SegmentationResult:
    """SegmentationResult from a Prediction, the mask message already built and node timings."""
    timings = {**prediction.timings_ms, **node_timings_ms}
    return SegmentationResult(
        header=header,
        query=query,
        present=bool(prediction.present),
        keyword=prediction.keyword,
        keyword_prob=float(prediction.keyword_prob),
        keyword_topk=[
            KeywordCandidate(text=c.text, prob=float(c.prob)) for c in prediction.keyword_topk
        ],
        answer=prediction.answer,
        mask=mask,
        confidence=float(prediction.score),
        has_box=prediction.box is not None,
        box=box_to_roi(prediction.box),
        timings=[StageTiming(stage=k, ms=float(v)) for k, v in timings.items()],
        model=model,
        untrained=bool(prediction.untrained),
        reasoning_fresh=bool(getattr(prediction, "fresh_reasoning", True)),
        reasoning_age=float(getattr(prediction, "reasoning_age_s", 0.0)),
    )
