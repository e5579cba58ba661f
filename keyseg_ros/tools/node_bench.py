"""`python3 -m keyseg_ros.tools.node_bench`: what the ROS adapter costs per frame, and frame-to-mask latency.

1. Adapter overhead, in this process: message -> array, mask/result/overlay -> messages, and the
   publish calls (with a subscriber attached), at 640x480 and 1280x720 (rgb8 frames, a mask
   covering a quarter of the frame). Also the detections (instances, track ids, Detection2DArray)
   and the 3D stage (a 16UC1 depth and camera_info matched to the frame -> target_point,
   target_cloud, detections_3d, published). The model is not involved.
2. End to end: keyseg_node runs as its own process with --model; frames are streamed to it at
   --rate over DDS and every returned mask is matched to its frame by header stamp.

Run it from a sourced install space (`source install/setup.bash`). Without a Fast DDS profile in
the environment the shipped one (share/keyseg_ros/config/fastdds.xml) is used.
"""

from __future__ import annotations

import argparse
import array
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from keyseg_ros.tools.common import SpinThread, node_command, stop_process, use_shipped_profile

SIZES = ((640, 480), (1280, 720))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m keyseg_ros.tools.node_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="config:tiny",
                        help="model for the end-to-end part (default: config:tiny, random weights)")
    parser.add_argument("--device", default="cpu", help="device for the model (default: cpu)")
    parser.add_argument("--precision", default="float32", help="model precision (default: float32)")
    parser.add_argument("--repeats", type=int, default=200, help="adapter iterations per size (default: 200)")
    parser.add_argument("--rate", type=float, default=30.0, help="end-to-end camera rate, Hz (default: 30)")
    parser.add_argument("--duration", type=float, default=5.0, help="end-to-end seconds per size (default: 5)")
    parser.add_argument("--skip-e2e", action="store_true", help="only measure the adapter overhead")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers as JSON")
    return parser


def _frame(width: int, height: int, stamp_ns: int = 0):
    from sensor_msgs.msg import Image

    from keyseg_ros.node.conversions import rgb_to_image

    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, Image().header)
    msg.header.frame_id = "bench"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def _median_ms(fn, repeats: int) -> float:
    from keyseg_core.timing import call_times_ms

    return statistics.median(call_times_ms(fn, repeats))


def adapter_overhead(node, repeats: int) -> list[dict]:
    """Median ms per adapter step, per frame size."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image
    from geometry_msgs.msg import PointStamped
    from sensor_msgs.msg import CameraInfo, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from keyseg_core.inference.instances import split_instances
    from keyseg_core.inference.overlay import overlay as draw_overlay
    from keyseg_core.inference.results import Prediction, mask_box
    from keyseg_core.inference.tracking import MaskTracker
    from keyseg_core.modeling.keyword_head import KeywordCandidate
    from keyseg_ros.msg import KeywordStamped, SegmentationResult
    from keyseg_ros.node import conversions, detections
    from keyseg_ros.node.diagnostics import NodeStats
    from keyseg_ros.node.target3d import Answer, Settings, Target3D

    qos = QoSProfile(depth=5)
    topics = (("mask", Image), ("keyword", KeywordStamped), ("result", SegmentationResult), ("overlay", Image),
              ("detections", Detection2DArray), ("target_point", PointStamped), ("target_cloud", PointCloud2),
              ("detections_3d", Detection3DArray))
    pubs = {name: node.create_publisher(t, f"bench/{name}", qos) for name, t in topics}
    for name, t in topics:
        node.create_subscription(t, f"bench/{name}", lambda _msg: None, qos)
    rows = []
    for width, height in SIZES:
        msg = _frame(width, height)
        mask = np.zeros((height, width), bool)
        mask[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = True
        pred = Prediction(mask=mask, score=0.8, keyword="cup", keyword_prob=0.6,
                          keyword_topk=[KeywordCandidate("cup", 0.6), KeywordCandidate("mug", 0.3)],
                          answer="Sure, it is the cup.", box=mask_box(mask),
                          timings_ms={"total": 20.0, "preprocess": 2.0})
        rgb = conversions.image_to_rgb(msg, 4096)
        mask_msg = conversions.mask_to_image(mask, msg.header)

        def result():
            return conversions.to_result(pred, header=msg.header, query="the cup", mask=mask_msg,
                                         model="bench", node_timings_ms={"decode_image": 0.1})

        result_msg = result()
        overlay_rgb = draw_overlay(rgb, mask, "cup (0.80)")
        tracker = MaskTracker()

        def detect():
            instances = split_instances(mask)
            pubs["detections"].publish(detections.detections_2d(msg.header, instances, tracker.update(instances),
                                                                "cup", 0.8))
            return instances

        instances = detect()
        depth = Image(header=msg.header, width=width, height=height, encoding="16UC1", step=2 * width)
        depth.data = array.array("B", np.full((height, width), 1500, "<u2").tobytes())
        info = CameraInfo(header=msg.header, width=width, height=height,
                          k=[500.0, 0.0, width / 2, 0.0, 500.0, height / 2, 0.0, 0.0, 1.0])
        settings = Settings(max_depth=10.0, erode_px=2, min_points=20, decimation=4, target_frame="",
                            tf_timeout=0.05)

        def publish_3d(outputs) -> bool:
            pubs["target_point"].publish(outputs.point)
            pubs["target_cloud"].publish(outputs.cloud)
            pubs["detections_3d"].publish(outputs.detections)
            return True

        stage = Target3D(settings=lambda: settings, publish=publish_3d, stats=NodeStats(), logger=node.get_logger(),
                         tf_buffer=None, depth_topic="depth", info_topic="camera_info")

        def depth_3d():
            stage.on_synced(msg, depth, info)
            stage.frame_answered(Answer(msg.header, width, height, instances, ["1"], "cup", 0.8))
        steps = {
            "decode_image": _median_ms(lambda: conversions.image_to_rgb(msg, 4096), repeats),
            "mask_to_msg": _median_ms(lambda: conversions.mask_to_image(mask, msg.header), repeats),
            "result_msg": _median_ms(result, repeats),
            "publish": _median_ms(lambda: (pubs["mask"].publish(mask_msg),
                                           pubs["keyword"].publish(KeywordStamped(header=msg.header, keyword="cup")),
                                           pubs["result"].publish(result_msg)), repeats),
            "detections": _median_ms(detect, repeats),
            "depth_3d": _median_ms(depth_3d, repeats),
            "overlay_draw": _median_ms(lambda: draw_overlay(rgb, mask, "cup (0.80)"), repeats),
            "overlay_msg_publish": _median_ms(lambda: pubs["overlay"].publish(
                conversions.rgb_to_image(overlay_rgb, msg.header)), repeats),
        }
        core = sum(steps[k] for k in ("decode_image", "mask_to_msg", "result_msg", "publish", "detections"))
        rows.append({"size": f"{width}x{height}", **steps, "total_without_overlay": core,
                     "total_with_depth": core + steps["depth_3d"],
                     "total_with_overlay": core + steps["overlay_draw"] + steps["overlay_msg_publish"]})
    return rows


def end_to_end(node, opts: argparse.Namespace) -> list[dict]:
    """Stream frames to a keyseg_node process; latency = mask arrival - frame stamp (one clock)."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from keyseg_ros.msg import SegmentationResult

    ns = f"/keyseg_bench_{os.getpid()}"
    cmd = node_command(ns, {"model": opts.model, "device": opts.device, "precision": opts.precision})
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    images = node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
    query = node.create_publisher(String, f"{ns}/query", 10)
    arrivals: dict[int, float] = {}
    model_ms: list[float] = []
    lock = threading.Lock()

    def on_result(msg) -> None:
        now = time.time_ns()
        with lock:
            arrivals[msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec] = now
            model_ms.extend(t.ms for t in msg.timings if t.stage == "total")

    node.create_subscription(SegmentationResult, f"{ns}/result", on_result, 10)
    rows = []
    try:
        deadline = time.monotonic() + 300
        while images.get_subscription_count() == 0 or query.get_subscription_count() == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"keyseg_node did not start: {proc.stderr.read()[-2000:]}")
            time.sleep(0.05)
        query.publish(String(data="the object in the middle"))
        for width, height in SIZES:
            frames = [_frame(width, height) for _ in range(2)]
            _stream(images, frames, opts.rate, 1.0)  # warm-up: first calls, caches, discovery
            time.sleep(0.5)
            with lock:
                arrivals.clear()
                model_ms.clear()
            sent = _stream(images, frames, opts.rate, opts.duration)
            time.sleep(1.0)  # let the last results arrive
            with lock:
                latencies = [(arrivals[s] - s) / 1e6 for s in sent if s in arrivals]
                models = list(model_ms)
            rows.append({
                "size": f"{width}x{height}", "sent": len(sent), "answered": len(latencies),
                "rate_hz": len(latencies) / opts.duration,
                "latency_ms_median": statistics.median(latencies) if latencies else float("nan"),
                "latency_ms_p90": float(np.percentile(latencies, 90)) if latencies else float("nan"),
                "model_ms_median": statistics.median(models) if models else float("nan"),
            })
    finally:
        stop_process(proc, timeout=30)
    return rows


def _stream(publisher, frames: list, rate: float, duration: float) -> list[int]:
    """Publish frames (re-stamped with the wall clock) at `rate` for `duration` s; their stamps."""
    stamps, period = [], 1.0 / rate
    start = next_time = time.monotonic()
    while time.monotonic() - start < duration:
        msg = frames[len(stamps) % len(frames)]
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 10**9)
        publisher.publish(msg)
        stamps.append(now)
        next_time += period
        time.sleep(max(0.0, next_time - time.monotonic()))
    return stamps


def _table(title: str, rows: list[dict]) -> str:
    keys = list(rows[0])
    cells = [[f"{r[k]:.3f}" if isinstance(r[k], float) else str(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda values: "| " + " | ".join(v.rjust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([title, line(keys), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(c) for c in cells)])


def main(args: list[str] | None = None) -> int:
    opts = build_parser().parse_args(args)
    use_shipped_profile(index_required=True, file_required=False)
    import rclpy

    rclpy.init()
    node = rclpy.create_node(f"keyseg_bench_{os.getpid()}")
    spinner = SpinThread(node, "keyseg_bench_spin")
    report: dict = {}
    try:
        report["adapter_ms"] = adapter_overhead(node, opts.repeats)
        print(_table("Adapter overhead per frame, median ms (no model)", report["adapter_ms"]))
        if not opts.skip_e2e:
            report["end_to_end"] = end_to_end(node, opts)
            report["end_to_end_config"] = {"model": opts.model, "device": opts.device,
                                           "precision": opts.precision, "camera_rate_hz": opts.rate}
            print()
            print(_table(f"End to end over DDS: model {opts.model} on {opts.device}, camera at "
                         f"{opts.rate:g} Hz, {opts.duration:g} s per size", report["end_to_end"]))
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
