"""`python3 -m keyseg_ros.tools.soak`: a robot's day, compressed. Drives keyseg_node with a long stream.

It starts keyseg_node as its own process (or drives one already running with --namespace and
--pid), then streams --frames camera frames at --rate over DDS: a new query every --query-every
frames, and a bad frame (wrong encoding, short data, zero size, oversized) every --bad-every
frames. It reports frames served and dropped, the node's own counters (errors, refused frames),
frame-to-result latency percentiles, and the node's resident memory (VmRSS) after warm-up and at
the end: memory is "flat" when it grew less than --max-growth percent.

Exit code 0 when the node stayed up, made no inference errors, answered frames and its memory
stayed flat; 1 otherwise (the report says which). Run it from a sourced install space
(`source install/setup.bash`); without a Fast DDS profile in the environment the shipped one is
used.

One module on purpose: the driving side (Soak, MemorySampler), the measured run and the report
(verdict, format_report) all work on one report dict and the node's counters, so apart each part
would have to know the others' keys. What other tools share is in tools/common.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from keyseg_ros.tools.common import SpinThread, node_command, stop_process, topic_prefix, use_shipped_profile

QUERIES = (
    "the cup I can drink from", "the chair nearest to the door", "something to cut paper with",
    "which object is used for sleeping", "the red mug on the table", "the remote control",
    "where is the laptop", "the plant by the window", "the bottle next to the sink",
    "the book on the shelf",
)
COUNTERS = ("frames_received", "frames_processed", "frames_dropped", "bad_frames", "inference_errors",
            "bad_queries", "frames_without_query")
BAD_KINDS = ("unknown encoding", "data shorter than step*height", "zero size", "oversized")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m keyseg_ros.tools.soak",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="config:tiny",
                        help="model for the node it starts (default: config:tiny, random weights)")
    parser.add_argument("--device", default="cpu", help="device for the model (default: cpu)")
    parser.add_argument("--frames", type=int, default=10_000, help="frames to send (default: 10000)")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate, Hz (default: 30)")
    parser.add_argument("--size", default="320x240", help="frame size WxH (default: 320x240)")
    parser.add_argument("--query-every", type=int, default=100, metavar="N",
                        help="publish a new query every N frames (default: 100)")
    parser.add_argument("--bad-every", type=int, default=50, metavar="N",
                        help="every Nth frame is a bad frame; 0: none (default: 50)")
    parser.add_argument("--warmup", type=int, default=100, metavar="N",
                        help="frames sent before the measured run; memory at start is taken "
                             "after them (default: 100)")
    parser.add_argument("--max-growth", type=float, default=5.0, metavar="PCT",
                        help="resident memory growth, start to end, that still counts as flat "
                             "(default: 5)")
    parser.add_argument("--namespace", help="drive a keyseg_node already running in this "
                                            "namespace instead of starting one")
    parser.add_argument("--pid", type=int, help="with --namespace: the node's process id, for its memory")
    parser.add_argument("--timeout", type=float, default=300.0, metavar="S",
                        help="longest wait for the node to start and answer its first frame "
                             "(default: 300)")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON")
    return parser


def rss_mib(pid: int) -> float | None:
    """Resident memory of process `pid` in MiB (Linux /proc), or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean")}
    arr = np.asarray(values)
    return {"p50": float(np.percentile(arr, 50)), "p90": float(np.percentile(arr, 90)),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max()), "mean": float(arr.mean())}


def _frames(width: int, height: int) -> list:
    """A few distinct rgb8 frames to cycle through (re-stamped before every publish)."""
    from sensor_msgs.msg import Image

    from keyseg_ros.node.conversions import rgb_to_image

    rng = np.random.default_rng(0)
    frames = []
    for i in range(4):
        ys, xs = np.mgrid[0:height, 0:width]
        rgb = np.stack([(xs * 255 // width + 60 * i) % 256, ys * 255 // height,
                        rng.integers(0, 255, (height, width))], axis=-1).astype(np.uint8)
        frames.append(rgb_to_image(rgb, Image().header))
    return frames


def _bad_frame(kind: str):
    from sensor_msgs.msg import Image

    msg = Image(height=24, width=32, encoding="rgb8", step=96)
    msg.data = bytes(96 * 24)
    if kind == "unknown encoding":
        msg.encoding = "yuv422"
    elif kind == "data shorter than step*height":
        msg.data = bytes(96 * 12)
    elif kind == "zero size":
        msg.height = msg.width = msg.step = 0
        msg.data = b""
    elif kind == "oversized":  # wider than the node's max_image_size (default 4096)
        msg.width, msg.height, msg.step = 5000, 1, 15_000
        msg.data = bytes(15_000)
    return msg


class Soak:
    """The driving side: publishers, the result and diagnostics listeners, and the bookkeeping."""

    def __init__(self, node, ns: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from keyseg_ros.msg import SegmentationResult

        self.node, self.ns = node, ns
        self.images = node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
        self.query = node.create_publisher(String, f"{ns}/query", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE))
        self.lock = threading.Lock()
        self.sent: dict[tuple[int, int], tuple[float, str]] = {}  # stamp -> (send time, query)
        self.arrived: dict[tuple[int, int], float] = {}
        self.wrong_query = 0
        self.counters: dict[str, str] = {}
        self.diagnostics_seen = 0
        node.create_subscription(SegmentationResult, f"{ns}/result", self._on_result, 100)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._status_name = f"{ns}/keyseg_node: segmentation"

    def _on_result(self, msg) -> None:
        now = time.monotonic()
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        with self.lock:
            if key in self.sent and key not in self.arrived:
                self.arrived[key] = now
                if msg.query != self.sent[key][1]:
                    self.wrong_query += 1  # answered for the query before (topics are not ordered)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                with self.lock:
                    self.counters = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_seen += 1

    def matched(self) -> bool:
        return (self.images.get_subscription_count() > 0 and self.query.get_subscription_count() > 0
                and self.node.count_publishers(f"{self.ns}/result") > 0)

    def set_query(self, text: str) -> None:
        from std_msgs.msg import String

        self.query.publish(String(data=text))

    def publish(self, msg, key: tuple[int, int], query: str) -> None:
        msg.header.stamp.sec, msg.header.stamp.nanosec = key
        with self.lock:
            self.sent[key] = (time.monotonic(), query)
        self.images.publish(msg)

    def answered(self, keys) -> int:
        with self.lock:
            return sum(k in self.arrived for k in keys)

    def failing(self) -> bool:
        """The node reports inference errors and has answered nothing."""
        with self.lock:
            errors = int(float(self.counters.get("inference_errors", 0)))
            return errors >= 3 and not self.arrived

    def problem(self) -> str:
        with self.lock:
            last = self.counters.get("last_problem", "")
        return f" (the node's last problem: {last})" if last else ""

    def fresh_counters(self, proc: subprocess.Popen | None) -> dict[str, int]:
        """The node's counters from a diagnostics message sent after this call."""
        with self.lock:
            seen = self.diagnostics_seen
        _wait(lambda: self.diagnostics_seen > seen + 1, 30, "keyseg_node's diagnostics", proc)
        with self.lock:
            return {k: int(float(self.counters.get(k, 0))) for k in COUNTERS}


class MemorySampler:
    """Samples the node's VmRSS once a second on a thread."""

    def __init__(self, pid: int | None) -> None:
        self.pid, self.samples = pid, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        if self.pid:
            self._thread.start()

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.wait(1.0):
            value = rss_mib(self.pid)
            if value is None:
                return
            self.samples.append((round(time.monotonic() - t0, 1), round(value, 1)))

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"keyseg_node exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def run(opts: argparse.Namespace, node, proc: subprocess.Popen | None, ns: str, pid: int | None) -> dict:
    width, height = (int(v) for v in opts.size.lower().split("x"))
    soak = Soak(node, ns)
    _wait(soak.matched, opts.timeout, "keyseg_node's subscriptions and result publisher", proc)
    frames, run_id = _frames(width, height), int(time.time()) % 100_000
    period = 1.0 / opts.rate

    # Warm-up: the model's first calls, allocator pools, DDS buffers; memory "at start" follows it.
    warm_keys = []
    deadline = time.monotonic() + opts.timeout
    while len(warm_keys) < opts.warmup or not soak.answered(warm_keys):
        if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
            raise RuntimeError(f"keyseg_node answered no frame during the warm-up{soak.problem()}")
        if soak.failing():
            raise RuntimeError(f"keyseg_node's predictions fail{soak.problem()}")
        if len(warm_keys) % max(1, int(2 * opts.rate)) == 0:
            soak.set_query("warm up")  # again every ~2 s: a query lost while discovery settles
        key = (run_id, 1_000_000_000 - 1 - len(warm_keys))
        soak.publish(frames[len(warm_keys) % len(frames)], key, "warm up")
        warm_keys.append(key)
        time.sleep(period)
    before = soak.fresh_counters(proc)  # the measured run's counts are differences from these
    memory = MemorySampler(pid)
    rss_after_warmup = rss_mib(pid) if pid else None
    memory.start()

    good_keys, bad_sent, queries_sent = [], 0, 0
    query = ""
    start = next_time = time.monotonic()
    try:
        for i in range(opts.frames):
            if i % opts.query_every == 0:
                query = QUERIES[queries_sent % len(QUERIES)]
                soak.set_query(query)
                queries_sent += 1
            key = (run_id, i)
            if opts.bad_every and i % opts.bad_every == opts.bad_every - 1:
                soak.publish(_bad_frame(BAD_KINDS[bad_sent % len(BAD_KINDS)]), key, query)
                bad_sent += 1
            else:
                soak.publish(frames[i % len(frames)], key, query)
                good_keys.append(key)
            if proc is not None and i % 100 == 0 and proc.poll() is not None:
                raise RuntimeError(f"keyseg_node exited ({proc.returncode}) after {i} frames")
            next_time += period
            time.sleep(max(0.0, next_time - time.monotonic()))
        duration = time.monotonic() - start
        # The last answers: wait until they stop coming (at most 10 s).
        last, settled = soak.answered(good_keys), time.monotonic()
        while time.monotonic() - settled < 2.0 and time.monotonic() - start - duration < 10.0:
            time.sleep(0.2)
            now = soak.answered(good_keys)
            if now != last:
                last, settled = now, time.monotonic()
        after = soak.fresh_counters(proc)
    finally:
        memory.stop()
    rss_end = rss_mib(pid) if pid else None
    # Start and end: medians of the first and last tenth of the once-a-second samples, so one
    # allocator hiccup does not decide "flat" (short runs fall back to single readings).
    values = [v for _, v in memory.samples]
    tenth = max(1, len(values) // 10)
    mem_start = float(np.median(values[:tenth])) if len(values) >= 10 else rss_after_warmup
    mem_end = float(np.median(values[-tenth:])) if len(values) >= 10 else rss_end

    with soak.lock:
        latencies = [(soak.arrived[k] - soak.sent[k][0]) * 1e3 for k in good_keys if k in soak.arrived]
        wrong_query = soak.wrong_query
    served = len(latencies)
    counters = {k: after[k] - before[k] for k in COUNTERS}
    growth = (mem_end - mem_start) / mem_start * 100.0 if mem_start and mem_end else None
    return {
        "config": {"model": opts.model, "device": opts.device, "frames": opts.frames,
                   "rate_hz": opts.rate, "size": opts.size, "query_every": opts.query_every,
                   "bad_every": opts.bad_every, "warmup": opts.warmup, "namespace": ns},
        "duration_s": duration,
        "frames_sent": opts.frames, "good_frames_sent": len(good_keys), "bad_frames_sent": bad_sent,
        "queries_sent": queries_sent,
        "frames_served": served,
        "frames_dropped": len(good_keys) - served,
        "served_rate_hz": served / duration if duration else 0.0,
        "answered_for_previous_query": wrong_query,
        "node": counters,
        "latency_ms": percentiles(latencies),
        "memory_mib": {"start": mem_start, "end": mem_end, "growth_pct": growth,
                       "after_warmup": rss_after_warmup, "at_end": rss_end,
                       "max": max(values, default=rss_end),
                       "samples": memory.samples[:: max(1, len(memory.samples) // 200)]},
    }


def verdict(report: dict, max_growth: float) -> list[str]:
    """Why the run is not healthy (empty when it is)."""
    problems = []
    if report.get("node_exit_code") not in (None, 0):
        problems.append(f"keyseg_node exited with code {report['node_exit_code']}")
    if report["node"]["inference_errors"]:
        problems.append(f"{report['node']['inference_errors']} inference errors")
    if not report["frames_served"]:
        problems.append("no frame was answered")
    growth = report["memory_mib"]["growth_pct"]
    if growth is not None and growth >= max_growth:
        problems.append(f"resident memory grew {growth:.1f}% (flat means < {max_growth:g}%)")
    return problems


def format_report(report: dict) -> str:
    lat, mem, node = report["latency_ms"], report["memory_mib"], report["node"]
    cfg = report["config"]
    growth = "n/a" if mem["growth_pct"] is None else f"{mem['growth_pct']:+.2f}%"
    fmt = (lambda v: "n/a" if v is None else f"{v:.1f}")  # noqa: E731
    rows = [
        ("model", f"{cfg['model']} on {cfg['device']}"),
        ("frames sent", f"{report['frames_sent']} ({report['good_frames_sent']} good, "
                        f"{report['bad_frames_sent']} bad) at {cfg['rate_hz']:g} Hz, {cfg['size']}, "
                        f"{report['duration_s']:.0f} s"),
        ("queries sent", f"{report['queries_sent']} (one every {cfg['query_every']} frames)"),
        ("frames served", f"{report['frames_served']} ({report['served_rate_hz']:.1f} Hz)"),
        ("frames dropped", f"{report['frames_dropped']} good frames not answered"),
        ("  replaced while waiting", f"{node['frames_dropped']} (a newer frame came before the model "
                                     "was free: by design)"),
        ("  never reached the callback", f"{report['frames_sent'] - node['frames_received']} (lost on "
                                         "the wire or overwritten in the keep-last subscription queue)"),
        ("answered for the previous query", str(report["answered_for_previous_query"])),
        ("node: bad frames refused", str(node["bad_frames"])),
        ("node: inference errors", str(node["inference_errors"])),
        ("latency ms p50 / p90 / p99 / max", f"{lat['p50']:.1f} / {lat['p90']:.1f} / {lat['p99']:.1f} / "
                                             f"{lat['max']:.1f}"),
        ("node memory MiB start / end / max", f"{fmt(mem['start'])} / {fmt(mem['end'])} / {fmt(mem['max'])}"
                                              f" (growth {growth})"),
    ]
    if report.get("node_exit_code") is not None:
        rows.append(("node exit code after SIGINT", str(report["node_exit_code"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(args: list[str] | None = None) -> int:
    opts = build_parser().parse_args(args)
    if opts.frames < 1 or opts.rate <= 0 or opts.query_every < 1 or opts.bad_every < 0:
        print("soak: error: --frames, --rate and --query-every must be > 0, --bad-every >= 0",
              file=sys.stderr)
        return 2
    use_shipped_profile(index_required=False, file_required=False)
    import rclpy

    proc = None
    if opts.namespace:
        ns, pid = topic_prefix(opts.namespace), opts.pid
    else:
        ns = f"/keyseg_soak_{os.getpid()}"
        fd, name = tempfile.mkstemp(prefix="keyseg_soak_node_", suffix=".log")
        os.close(fd)
        node_log = Path(name)
        with open(node_log, "w") as out:
            proc = subprocess.Popen(
                node_command(ns, {"model": opts.model, "device": opts.device, "diagnostics_period": "1.0"}),
                stdout=out, stderr=subprocess.STDOUT)
        pid = proc.pid
    rclpy.init()
    node = rclpy.create_node(f"keyseg_soak_{os.getpid()}")
    spinner = SpinThread(node, "keyseg_soak_spin")
    report = None
    try:
        report = run(opts, node, proc, ns, pid)
    except RuntimeError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
    finally:
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown()
        if proc is not None:
            stop_process(proc, timeout=60)
            log_text = node_log.read_text(errors="replace")
            if report is not None:
                report["node_exit_code"] = proc.returncode
                report["node_log"] = str(node_log)
                report["node_log_tracebacks"] = log_text.count("Traceback")
            else:
                print(f"keyseg_node's log ({node_log}):\n{log_text[-3000:]}", file=sys.stderr)
    if report is None:
        return 1
    problems = verdict(report, opts.max_growth)
    if report.get("node_log_tracebacks"):
        problems.append("the node printed a traceback")
    report["problems"] = problems
    print(format_report(report))
    print("verdict: " + ("healthy" if not problems else "; ".join(problems)))
    if opts.json:
        opts.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
