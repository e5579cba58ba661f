"""`keyseg demo` / `ros2 run keyseg_ros demo`: keyseg_node answers a sequence of reasoning queries
about generated scenes, end to end over ROS 2, and the answers are scored.

What runs, each as its own process, as on a robot:
  keyseg_node    the lifecycle node (`python -m keyseg_ros.node`), --model as its `model` parameter
                 (empty: keyseg_core's default, the shipped KeySeg-Tiny); not started with --attach
  image_player   one per scene, playing it as a camera on <namespace>/image; its frame_id names the
                 scene
  query          one process fed one query per line on stdin, as a voice or text front end would
  this process   a small rclpy node that collects `result`, `mask` and `keyword` and scores them

Scenes come from keyseg_core.scenes' test split (held-out backgrounds and phrasings): one query type
after another (use, property, spatial, kind, size, name, ...), each with the scene's exact target
mask and keyword. A query is held until the node has answered --hold frames of its scene. A result
belongs to a query when its `query` field and its header's frame_id (the scene) both match, so a
frame answered for the previous query or scene never counts.

Writes into --out: scenes/qNN.jpg (what the camera plays), qNN_<type>_overlay.png (published mask
tinted, the true target outlined in green), contact_sheet.png, summary.json, summary.csv and
logs/ (each process's output); prints the table. Exit code 0 when every query was answered and every
process stopped cleanly; 1 when something failed (the message says what: model load, node start,
discovery, a tool, a query without an answer); 2 for bad arguments; 128 + signal number on Ctrl-C
or SIGTERM. Every process it started is stopped before it exits.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.utilities import remove_ros_args

from keyseg_ros.node.signals import StopSignals

QUERY_TYPE_ORDER = ("use", "property", "spatial", "kind", "size", "name")
SPLIT = "test"  # held-out backgrounds and phrasings: what the model never saw in training
SCENE_SIZE = (320, 240)
JPEG_QUALITY = 92  # as `keyseg generate` writes its scenes
MAX_QUERIES = 24
SAMPLE_SEARCH = 400  # generated scenes searched for a query of the wanted type
STOP_TIMEOUT_S = 30.0  # per process, after SIGINT, before SIGKILL
FRAME_PREFIX = "keyseg_demo_scene_"
WRITTEN_BY = "keyseg demo"  # summary.json's mark: a later run may replace this folder's demo files
GREEN = np.array([40, 220, 60], np.uint8)


class DemoError(RuntimeError):
    """A failure told to the user in one plain message (no traceback); exit code 1."""


class Interrupted(BaseException):
    """SIGINT/SIGTERM/SIGHUP arrived: stop everything and exit 128 + signal number.

    Raised only by `StopFlag.check()` at the demo's own wait points, never from a signal handler.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- arguments -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyseg_ros demo", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--attach", action="store_true",
                        help="drive a keyseg_node already running in --namespace instead of starting "
                             "one (demo.launch.py starts the node itself)")
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (keyseg_core/cli/demo.py declares the same ones for `keyseg demo`)."""
    parser.add_argument("--model", default=None,
                        help="keyseg_node's `model` parameter: checkpoint folder, hub id or "
                             "config:<name> (default: the shipped, trained KeySeg-Tiny)")
    parser.add_argument("--device", default="cpu", help="keyseg_node's `device`: cpu, cuda or cuda:N")
    parser.add_argument("--queries", type=int, default=6, metavar="N",
                        help=f"queries to ask, one scene each, query types in turn (default: 6, at most "
                             f"{MAX_QUERIES})")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second (default: 10)")
    parser.add_argument("--hold", type=int, default=3, metavar="N",
                        help="answered frames to collect per query before the next (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder: overlays, contact sheet, summary, logs (default: out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="scene generator seed (default: 0)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="longest wait for each step: the node's start-up (model load included) "
                             "and each query's answers (default: 120)")
    parser.add_argument("--namespace", default="/keyseg",
                        help="namespace of keyseg_node; the camera is <namespace>/image "
                             "(default: /keyseg, which config/keyseg.rviz shows)")


def argument_problem(opts: argparse.Namespace) -> str | None:
    """Why the options cannot work, or None."""
    if not 1 <= opts.queries <= MAX_QUERIES:
        return f"--queries must be between 1 and {MAX_QUERIES}, got {opts.queries}"
    if not opts.rate > 0:
        return f"--rate must be > 0, got {opts.rate:g}"
    if opts.hold < 1:
        return f"--hold must be >= 1, got {opts.hold}"
    if not opts.timeout > 0:
        return f"--timeout must be > 0, got {opts.timeout:g}"
    if opts.seed < 0:
        return f"--seed must be >= 0, got {opts.seed}"
    if not re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_/]*", opts.namespace) or "//" in opts.namespace:
        return f"--namespace must be a ROS namespace such as /keyseg, got {opts.namespace!r}"
    if opts.out.exists() and not opts.out.is_dir():
        return f"--out {opts.out} exists and is not a folder"
    return None


# ---- scenes ----------------------------------------------------------------------------------


@dataclass
class Item:
    """One query of the demo: its scene (as the camera plays it), target mask and keyword."""

    index: int  # 1-based
    qtype: str
    query: str
    expected: str
    sample: int  # index of the scene in the generated split
    background: str
    image: np.ndarray  # HxWx3 uint8, the decoded JPEG the camera publishes
    target: np.ndarray  # HxW uint8 0/1
    scene_path: Path
    results: list = field(default_factory=list)  # (arrival time, SegmentationResult), in order
    query_sent: float = 0.0

    @property
    def frame_id(self) -> str:
        return f"{FRAME_PREFIX}{self.index:02d}"

    @property
    def stem(self) -> str:
        return f"q{self.index:02d}_{self.qtype}"


def make_items(n: int, seed: int, scene_dir: Path, check=lambda: None) -> list[Item]:
    """n scenes of the test split with one query each, query types in QUERY_TYPE_ORDER, different
    targets where the split allows; each scene written as the JPEG the camera plays. `check` is
    called before each scene is generated (StopFlag.check: a stop request ends the search)."""
    from PIL import Image as PILImage

    from keyseg_core.scenes import SceneConfig, load_knowledge, make_sample

    kb = load_knowledge()
    config = SceneConfig(width=SCENE_SIZE[0], height=SCENE_SIZE[1])
    cache: dict = {}

    def sample(i: int):
        if i not in cache:
            check()
            cache[i] = make_sample(seed, SPLIT, i, config, kb)
        return cache[i]

    scene_dir.mkdir(parents=True, exist_ok=True)
    items: list[Item] = []
    used_samples: set[int] = set()
    used_targets: set[str] = set()
    for k in range(n):
        want = QUERY_TYPE_ORDER[k % len(QUERY_TYPE_ORDER)]
        chosen = None
        for fresh_target in (True, False):
            for i in range(SAMPLE_SEARCH):
                if i in used_samples:
                    continue
                s = sample(i)
                if fresh_target and s.keyword in used_targets:
                    continue
                query = next((q for q in s.queries if q.spec.type == want), None)
                if query is not None:
                    chosen = (i, s, query)
                    break
            if chosen:
                break
        if chosen is None:  # the type is too rare for this seed: any unused scene's first query
            i = next(i for i in range(SAMPLE_SEARCH * 2) if i not in used_samples)
            chosen = (i, sample(i), sample(i).queries[0])
        i, s, query = chosen
        used_samples.add(i)
        used_targets.add(s.keyword)
        path = scene_dir / f"q{k + 1:02d}.jpg"
        PILImage.fromarray(s.scene.image).save(path, format="JPEG", quality=JPEG_QUALITY)
        with PILImage.open(path) as img:  # exactly the pixels the image player will send
            image = np.asarray(img.convert("RGB"))
        items.append(Item(k + 1, query.spec.type, query.text, s.keyword, i, s.background, image,
                          s.target_mask, path))
    return items


# ---- processes -------------------------------------------------------------------------------


def _parent_death_signal():
    """preexec_fn: the child gets SIGTERM if this process dies without stopping it (Linux)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


class Proc:
    """A started process: its output goes to a log file; the query tool also gets a stdin pipe and
    its lines in a queue."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict, *, feed: bool = False) -> None:
        self.name, self.log = name, log
        self.lines: queue.Queue[str] = queue.Queue()
        self._log_file = open(log, "w", encoding="utf-8")
        self.proc = subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE if feed else subprocess.DEVNULL,
            stdout=subprocess.PIPE if feed else self._log_file, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,  # our Ctrl-C does not hit it: we stop it
            preexec_fn=_parent_death_signal())
        self._reader = None
        self.fed = False  # a line was written to its stdin
        if feed:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._log_file.write(line)
            self._log_file.flush()
            self.lines.put(line.rstrip("\n"))

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self, tail: int = 2500) -> str:
        self._log_file.flush()
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def send_line(self, text: str) -> None:
        self.fed = True
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGINT (as Ctrl-C or `ros2 launch` would), then SIGKILL after `timeout`; the exit code."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
                if self.fed:  # the query tool reads its input: it ends at the end of it, and must
                    self.proc.wait(timeout=10.0)  # not get a signal while it shuts down
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.alive():
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5.0)
        self._log_file.close()
        return self.proc.returncode


class Processes:
    """Every process the demo starts, so that all of them are stopped whatever happens."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Proc] = []
        self.exit_codes: dict[int, int] = {}
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")

    def start(self, name: str, module: str, args: list[str], *, feed: bool = False) -> Proc:
        proc = Proc(name, [sys.executable, "-m", module, *args], self.logs / f"{name}.log", self.env,
                    feed=feed)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc) -> int:
        code = proc.stop()
        self.exit_codes[proc.pid] = code
        return code

    def stop_all(self) -> None:
        """Players and the query tool first, the node last; each with its own SIGINT."""
        for proc in sorted(self.started, key=lambda p: p.name == "keyseg_node"):
            if proc.pid not in self.exit_codes:
                self.stop(proc)

    def report(self) -> list[dict]:
        return [{"name": p.name, "pid": p.pid, "exit_code": self.exit_codes.get(p.pid)} for p in self.started]


# ---- the collecting node ---------------------------------------------------------------------


class Collector:
    """result/mask/keyword/diagnostics of one keyseg_node, kept with their arrival times."""

    def __init__(self, node, ns: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from keyseg_ros.msg import KeywordStamped, SegmentationResult

        self.node, self.ns = node, ns
        self.lock = threading.Lock()
        self.results: list[tuple[float, object]] = []
        self.masks: dict[tuple[str, int, int], bytes] = {}
        self.keywords: list[str] = []
        self.status: dict[str, str] = {}
        self._status_name = f"{ns}/keyseg_node: segmentation"
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(SegmentationResult, f"{ns}/result", self._on_result, reliable)
        node.create_subscription(Image, f"{ns}/mask", self._on_mask, reliable)
        node.create_subscription(KeywordStamped, f"{ns}/keyword", self._on_keyword, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_result(self, msg) -> None:
        now = time.time()
        if msg.header.frame_id.startswith(FRAME_PREFIX):
            with self.lock:
                self.results.append((now, msg))

    def _on_mask(self, msg) -> None:
        if msg.header.frame_id.startswith(FRAME_PREFIX):
            key = (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec)
            with self.lock:
                self.masks[key] = bytes(msg.data)

    def _on_keyword(self, msg) -> None:
        with self.lock:
            self.keywords.append(msg.keyword)

    def _on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                with self.lock:
                    self.status = {kv.key: kv.value for kv in status.values}

    def matching(self, item: Item) -> list:
        with self.lock:
            return [(t, m) for t, m in self.results
                    if m.query == item.query and m.header.frame_id == item.frame_id]

    def answered_frames_of(self, item: Item) -> bool:
        """A result (for any query) on a frame of `item`'s scene has arrived."""
        with self.lock:
            return any(m.header.frame_id == item.frame_id for _, m in self.results)

    def mask_agrees(self, result) -> bool:
        """The `mask` topic delivered the same mask as `result` for the same frame."""
        key = (result.header.frame_id, result.header.stamp.sec, result.header.stamp.nanosec)
        with self.lock:
            return self.masks.get(key) == bytes(result.mask.data)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {"result": len(self.results), "mask": len(self.masks), "keyword": len(self.keywords)}

    def node_ready(self) -> bool:
        """keyseg_node is active here: it subscribes to image and query, and publishes results."""
        return (self.node.count_subscribers(f"{self.ns}/image") > 0
                and self.node.count_subscribers(f"{self.ns}/query") > 0
                and self.node.count_publishers(f"{self.ns}/result") > 0)

    def problem(self) -> str:
        """The node's own account from its diagnostics, for error messages ("" when none)."""
        with self.lock:
            status = dict(self.status)
        if not status:
            return ""
        keys = ("frames_received", "frames_processed", "inference_errors", "bad_frames")
        counters = ", ".join(f"{k} {status[k]}" for k in keys if k in status)
        last = status.get("last_problem", "")
        return f" (keyseg_node reports {counters}" + (f"; last problem: {last}" if last else "") + ")"

    def inference_errors(self) -> int:
        with self.lock:
            return int(float(self.status.get("inference_errors", 0) or 0))


# ---- the run ---------------------------------------------------------------------------------


def _fail_on_exit(proc: Proc | None, what: str) -> None:
    if proc is not None and not proc.alive():
        raise DemoError(f"{proc.name} exited with code {proc.proc.returncode} while {what}; its log "
                        f"({proc.log}):\n{proc.output()}")


def _node_start_failure(node: Proc) -> DemoError:
    """What went wrong when keyseg_node exited during start-up, in plain words."""
    log, code = node.output(20000), node.proc.returncode
    load = re.search(r"cannot load model .*", log)
    if load:
        return DemoError(f"model load failed: keyseg_node says: {load.group(0).strip()} (exit code {code}; "
                         f"log: {node.log})")
    param = re.search(r"keyseg_node: error: .*", log)
    if param:
        return DemoError(f"keyseg_node refused a parameter: {param.group(0).strip()} (log: {node.log})")
    return DemoError(f"keyseg_node exited with code {code} during start-up; its log ({node.log}):\n"
                     f"{log[-2500:]}")


class Demo:
    def __init__(self, opts: argparse.Namespace, ros_node, collector: Collector, procs: Processes,
                 stop: StopFlag | None = None) -> None:
        self.opts, self.ros, self.collector, self.procs = opts, ros_node, collector, procs
        self.stop = stop if stop is not None else StopFlag()
        self.ns = "/" + opts.namespace.strip("/")
        self.node: Proc | None = None
        self.query_tool: Proc | None = None
        self.model, self.untrained = opts.model or "", None
        self.asked = False  # a query was sent
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def _wait(self, condition, timeout: float, on_timeout, *, watch: tuple = ()) -> None:
        """Poll `condition` until true; a watched process that exits, or the deadline, is a DemoError;
        a stop request (signal) raises Interrupted."""
        deadline = time.monotonic() + timeout
        while True:
            self.stop.check()
            if condition():
                return
            for proc, what in watch:
                starting = "node_ready_s" not in self.timings
                if proc is not None and proc is self.node and not proc.alive() and starting:
                    raise _node_start_failure(proc)
                _fail_on_exit(proc, what)
            if time.monotonic() > deadline:
                raise on_timeout()
            time.sleep(0.02)

    def start_processes(self) -> None:
        """keyseg_node (unless attached) and the query tool; their imports and the model load overlap
        with making the scenes."""
        if not self.opts.attach:
            params = ["-p", f"device:={self.opts.device}"]
            if self.opts.model:
                params += ["-p", f"model:={self.opts.model}"]
            self.node = self.procs.start("keyseg_node", "keyseg_ros.node",
                                         ["--ros-args", "-r", f"__ns:={self.ns}", *params])
            model = self.opts.model or "the shipped KeySeg-Tiny (keyseg_core's default model)"
            self.say(f"keyseg_node: starting with {model} on {self.opts.device} (pid {self.node.pid}, "
                     f"log {self.node.log})")
        # The tool waits for the node's query subscription; longer than we do, so that our own
        # timeout (with its better message) comes first.
        self.query_tool = self.procs.start(
            "query", "keyseg_ros.tools.query",
            ["--namespace", self.ns, "--wait", f"{self.opts.timeout + 30:g}", "--ros-args", "-r",
             "__node:=keyseg_demo_query"], feed=True)

    def _node_active(self) -> bool:
        if not self.collector.node_ready():
            return False
        # Our own node (its log says so), not another one that happens to run in this namespace.
        return self.node is None or "active: waiting for frames" in self.node.output(1 << 20)

    def wait_ready(self, t0: float) -> None:
        def not_ready() -> DemoError:
            if self.node is None:
                return DemoError(f"discovery failed: no active keyseg_node in {self.ns} after "
                                 f"{self.opts.timeout:g} s (is it running, in this ROS_DOMAIN_ID?)")
            log = self.node.output(1 << 20)
            if "active: waiting for frames" in log:
                return DemoError(
                    f"discovery failed: keyseg_node is active (its log says so) but its topics in {self.ns} "
                    f"were not seen here within {self.opts.timeout:g} s; check ROS_DOMAIN_ID, "
                    "ROS_AUTOMATIC_DISCOVERY_RANGE and the Fast DDS profile (docs/ros.md)")
            if "loaded" not in log:
                return DemoError(f"node start timed out: keyseg_node has not loaded its model after "
                                 f"{self.opts.timeout:g} s (a slow machine? raise --timeout); "
                                 f"log: {self.node.log}")
            return DemoError(f"node start timed out: keyseg_node loaded its model but did not become "
                             f"active within {self.opts.timeout:g} s; its log ({self.node.log}):\n"
                             f"{self.node.output()}")

        if self.node is None:
            self.say(f"keyseg_node: waiting for the node running in {self.ns}")
        self._wait(self._node_active, self.opts.timeout, not_ready,
                   watch=((self.node, "starting"), (self.query_tool, "waiting for keyseg_node")))
        self.timings["node_ready_s"] = time.monotonic() - t0
        if self.ros.count_publishers(f"{self.ns}/result") > 1:
            raise DemoError(f"more than one keyseg_node publishes on {self.ns}/result: stop the other one, "
                            "or run the demo in another --namespace")
        self.say(f"keyseg_node: active after {self.timings['node_ready_s']:.1f} s")

    def warm_up(self, item: Item) -> None:
        """One `segment` call on the first scene: the model's first, slow prediction happens here, and
        a model that cannot predict is reported before the camera starts."""
        from std_msgs.msg import Header

        from keyseg_ros.node.conversions import rgb_to_image
        from keyseg_ros.srv import Segment

        t0 = time.monotonic()
        client = self.ros.create_client(Segment, f"{self.ns}/segment")
        try:
            self._wait(client.service_is_ready, self.opts.timeout,
                       lambda: DemoError(f"discovery failed: keyseg_node's {self.ns}/segment service did not "
                                         f"appear within {self.opts.timeout:g} s"),
                       watch=((self.node, "waiting for its segment service"),))
            request = Segment.Request(image=rgb_to_image(item.image, Header(frame_id="keyseg_demo_warmup")),
                                      query=item.query)
            future = client.call_async(request)
            self._wait(future.done, self.opts.timeout,
                       lambda: DemoError(f"keyseg_node did not answer a segment call within "
                                         f"{self.opts.timeout:g} s{self.collector.problem()}"),
                       watch=((self.node, "answering the warm-up segment call"),))
            response = future.result()
        finally:
            self.ros.destroy_client(client)
        if not response.success:
            raise DemoError(f"the model cannot predict: keyseg_node answered the warm-up call with "
                            f"'{response.message}'")
        self.model, self.untrained = response.result.model, response.result.untrained
        self.timings["warmup_s"] = time.monotonic() - t0
        state = "UNTRAINED (random) weights" if self.untrained else "trained"
        self.say(f"keyseg_node: model {self.model} ({state}); warm-up prediction "
                 f"{self.timings['warmup_s']:.1f} s")
        if self.untrained:
            self.say("WARNING: the model has untrained weights: its keywords and masks are meaningless and "
                     "IoU will be near 0. Leave out --model to use the shipped KeySeg-Tiny.")

    def send_query(self, item: Item) -> None:
        """One line to the query tool; returns once it reports the node acknowledged it."""
        tool = self.query_tool
        self.stop.check()
        _fail_on_exit(tool, "waiting for keyseg_node's query subscription")
        tool.send_line(item.query)
        expected = f"query {item.query!r} ->"
        deadline = time.monotonic() + self.opts.timeout
        while True:
            self.stop.check()
            try:
                line = tool.lines.get(timeout=0.1)
            except queue.Empty:
                _fail_on_exit(tool, f"sending query {item.index}")
                if time.monotonic() > deadline:
                    raise DemoError(f"the query tool did not deliver query {item.index} within "
                                    f"{self.opts.timeout:g} s; its log ({tool.log}):\n"
                                    f"{tool.output()}") from None
                continue
            if line.startswith(expected):
                item.query_sent = time.time()
                return

    def ask(self, item: Item) -> None:
        """Camera, query, answers: hold the query until --hold frames of its scene are answered.

        From the second query on, the camera shows the new scene first, and the query goes out only
        once the node has answered a frame of it (still for the previous query). So no frame of the
        previous scene is left in the node when the query changes: the node's reasoning for the
        new query (once per query in its streaming mode) sees the new scene.
        """
        self.stop.check()
        first = not self.asked
        if first:  # no query yet: the node would only count the frames as frames without a query
            self.send_query(item)
        player = self.procs.start(
            f"image_player_{item.stem}", "keyseg_ros.tools.image_player",
            [str(item.scene_path), "--topic", f"{self.ns}/image", "--rate", f"{self.opts.rate:g}", "--loop",
             "--frame-id", item.frame_id, "--wait", f"{self.opts.timeout:g}",
             "--ros-args", "-r", f"__node:=keyseg_demo_camera_{item.index:02d}"])
        self.asked = True
        try:
            if not first:
                self._wait(lambda: self.collector.answered_frames_of(item), self.opts.timeout,
                           lambda: DemoError(f"keyseg_node answered no frame of scene {item.index} within "
                                             f"{self.opts.timeout:g} s{self.collector.problem()}"),
                           watch=((self.node, f"answering scene {item.index}"),
                                  (player, f"playing scene {item.index}")))
                self.send_query(item)

            def no_answer() -> DemoError:
                got = len(self.collector.matching(item))
                return DemoError(f"query {item.index} ({item.query!r}) got {got} of {self.opts.hold} answers "
                                 f"within {self.opts.timeout:g} s{self.collector.problem()}")

            def answered() -> bool:
                if len(self.collector.matching(item)) >= self.opts.hold:
                    return True
                if self.collector.inference_errors() >= 3 and not self.collector.matching(item):
                    raise DemoError(f"keyseg_node's predictions fail{self.collector.problem()}")
                return False

            self._wait(answered, self.opts.timeout, no_answer,
                       watch=((self.node, f"answering query {item.index}"),
                              (player, f"playing scene {item.index}")))
        finally:
            self.procs.stop(player)
        item.results = self.collector.matching(item)
        row = score(item, self.collector)
        mark = "right" if row["correct"] else f"expected {item.expected}"
        self.say(f"[{item.index}/{self.opts.queries}] {item.qtype:<8} {item.query}  ->  "
                 f"{row['published_keyword'] or '(none)'} ({mark}), IoU {row['iou']:.2f}, "
                 f"{row['latency_ms']:.0f} ms")


# ---- scoring and outputs ---------------------------------------------------------------------


def _mask_of(msg) -> np.ndarray:
    """HxW bool from a mono8 sensor_msgs/Image (any row padding)."""
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    return rows[:, : msg.width] > 0


def score(item: Item, collector: Collector | None = None) -> dict:
    """One summary row: the first answered frame's keyword and IoU, latency over all answered frames;
    with the collector, whether the `mask` topic carried the same mask for that frame."""
    from keyseg_core.eval.metrics import mask_iou

    if not item.results:
        return {"published_keyword": "", "correct": False, "iou": 0.0, "latency_ms": float("nan")}
    arrival, first = item.results[0]
    latencies = [(t - (m.header.stamp.sec + m.header.stamp.nanosec * 1e-9)) * 1e3 for t, m in item.results]
    predicted = _mask_of(first.mask)
    timings = {t.stage: t.ms for t in first.timings}
    return {
        "index": item.index,
        "query_type": item.qtype,
        "query": item.query,
        "expected_keyword": item.expected,
        "published_keyword": first.keyword,
        "keyword_prob": round(float(first.keyword_prob), 4),
        "correct": first.keyword.strip().lower() == item.expected.lower(),
        "iou": round(float(mask_iou(predicted, item.target)), 4),
        "latency_ms": round(float(np.median(latencies)), 1),
        "latencies_ms": [round(v, 1) for v in latencies],
        "model_ms": round(float(timings.get("total", float("nan"))), 1),
        "first_answer_s": round(arrival - item.query_sent, 3),
        "answers": len(item.results),
        "keyword_topk": [[c.text, round(float(c.prob), 4)] for c in first.keyword_topk],
        "answer": first.answer,
        "confidence": round(float(first.confidence), 4),
        "mask_pixels": int(predicted.sum()),
        "target_pixels": int(item.target.sum()),
        "sample_index": item.sample,
        "background": item.background,
        "frame_id": item.frame_id,
        "scene": str(item.scene_path),
        "mask_topic_agrees": None if collector is None else collector.mask_agrees(first),
    }


def _edge(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of `mask`, two pixels wide."""
    m = mask.astype(bool)
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = np.pad(m & ~inner, 1)
    return edge[1:-1, 1:-1] | edge[:-2, 1:-1] | edge[2:, 1:-1] | edge[1:-1, :-2] | edge[1:-1, 2:]


def draw_answer(image: np.ndarray, predicted: np.ndarray, target: np.ndarray, label: str) -> np.ndarray:
    """The node's overlay (published mask tinted and outlined in yellow, keyword label) with the true
    target's outline in green (with a dark rim) on top, except over the label."""
    from keyseg_core.inference.overlay import overlay

    plain = overlay(image, predicted)
    out = overlay(image, predicted, label)
    edge = _edge(target)
    changed = np.argwhere((plain != out).any(axis=2))
    if changed.size:  # the label box: keep it readable
        (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
        edge[y0 : y1 + 1, x0 : x1 + 1] = False
    p = np.pad(edge, 1)
    halo = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]) & ~edge
    out[halo] = 0  # a dark rim keeps the green visible on any background
    out[edge] = GREEN
    return out


def write_outputs(out: Path, items: list[Item], rows: list[dict], summary: dict) -> dict[str, str]:
    """Overlays, contact sheet, summary.json and summary.csv; returns their paths."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    from keyseg_core.scenes.writer import contact_sheet

    paths: dict[str, str] = {}
    tiles = []
    for item, row in zip(items, rows):
        predicted = _mask_of(item.results[0][1].mask)
        label = f"{row['published_keyword']} ({row['keyword_prob']:.2f})"
        drawn = draw_answer(item.image, predicted, item.target, label)
        path = out / f"{item.stem}_overlay.png"
        PILImage.fromarray(drawn).save(path)
        row["overlay"] = str(path)
        verdict = "right" if row["correct"] else f"expected {row['expected_keyword']}"
        # Already drawn: an empty mask makes the sheet paste the picture as it is.
        tiles.append((drawn, np.zeros(predicted.shape, bool), f"{item.index}. [{item.qtype}] {item.query}",
                      f"-> {row['published_keyword']} ({verdict}), IoU {row['iou']:.2f}, "
                      f"{row['latency_ms']:.0f} ms"))
    columns = 3 if len(tiles) in (3, 5, 6, 9) else min(4, len(tiles))
    sheet_path = out / "contact_sheet.png"
    contact_sheet(tiles, sheet_path, columns=columns)
    # A title line above the grid: model, legend, totals.
    grid = PILImage.open(sheet_path).convert("RGB")
    title_h = 36
    sheet = PILImage.new("RGB", (grid.width, grid.height + title_h), (255, 255, 255))
    sheet.paste(grid, (0, title_h))
    draw = ImageDraw.Draw(sheet)
    model = summary["model"] + (" (UNTRAINED weights)" if summary["untrained"] else "")
    draw.text((4, 3), f"keyseg demo - model {model} - keywords right {summary['keywords_right']}/"
                      f"{len(rows)}, mean IoU {summary['mean_iou']:.2f}, median latency "
                      f"{summary['median_latency_ms']:.0f} ms", fill=(0, 0, 0))
    draw.text((4, 19), "tinted + yellow outline: the mask keyseg_node published; green outline: the "
                       "scene's true target", fill=(60, 60, 60))
    sheet.save(sheet_path)
    paths["contact_sheet"] = str(sheet_path)

    columns_csv = ["index", "query_type", "query", "expected_keyword", "published_keyword", "keyword_prob",
                   "correct", "iou", "latency_ms", "model_ms", "first_answer_s", "answers", "background",
                   "overlay"]
    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns_csv, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["summary_csv"] = str(csv_path)
    json_path = out / "summary.json"
    paths["summary_json"] = str(json_path)
    summary["outputs"] = dict(paths)
    json_path.write_text(json.dumps({**summary, "queries": rows}, indent=2) + "\n", encoding="utf-8")
    return paths


def format_table(rows: list[dict]) -> str:
    """latency: frame published -> result received (median over the held frames); answer: query
    sent -> its first answer."""
    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    head = (f"{'#':>2}  {'type':<8}  {'query':<52}  {'expected':<12}  {'published':<16}  {'IoU':>5}  "
            f"{'latency':>8}  {'answer':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        published = r["published_keyword"] + ("" if r["correct"] else " (x)")
        lines.append(f"{r['index']:>2}  {r['query_type']:<8}  {cut(r['query'], 52):<52}  "
                     f"{cut(r['expected_keyword'], 12):<12}  {cut(published, 16):<16}  {r['iou']:>5.2f}  "
                     f"{r['latency_ms']:>5.0f} ms  {r['first_answer_s']:>4.1f} s")
    return "\n".join(lines)


def _clear_previous(out: Path) -> None:
    """Remove what an earlier demo run wrote into `out`: only when its summary.json says it is the
    demo's, and only the demo's own file names."""
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or previous.get("written_by") != WRITTEN_BY:
        return
    for pattern in ("q[0-9][0-9]_*_overlay.png", "scenes/q[0-9][0-9].jpg", "logs/*.log", "summary.csv",
                    "contact_sheet.png", "summary.json"):
        for path in out.glob(pattern):
            path.unlink()


# ---- main ------------------------------------------------------------------------------------


class StopFlag(StopSignals):
    """Whether SIGINT/SIGTERM/SIGHUP arrived (the first one's number), for the demo's wait loops.

    The signal handler only records the number: it raises nothing and takes no lock. An exception
    raised from a handler lands wherever the main thread happens to be, inside logging's lock
    release or another library's clean-up, where Python may print it as "Exception ignored" and
    carry on (the demo then ran to the end). Setting a threading.Event from the handler could
    deadlock on the event's own lock if the main thread were inside `wait()` on it. So the wait
    loops poll the flag (every 20-100 ms) through `check()`, which raises Interrupted at that known
    point; the clean-up that follows stops every process, and later signals are only noted.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def _label(self, signum: int) -> int:
        return signum  # the exit code is 128 + this number

    def check(self) -> None:
        """Raise Interrupted if a stop signal has arrived."""
        if self.received is not None:
            raise Interrupted(self.received)


def _use_shipped_profile() -> None:
    """The package's Fast DDS profile (camera-sized frames on one host) unless one is set."""
    if os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        return
    try:
        from ament_index_python.packages import get_package_share_directory

        profile = Path(get_package_share_directory("keyseg_ros")) / "config" / "fastdds.xml"
    except Exception:  # noqa: BLE001 - without the index the environment's settings stay
        return
    if profile.is_file():
        for name in ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE"):
            os.environ[name] = str(profile)


def run(opts: argparse.Namespace, ros_args: list[str] | None = None) -> int:
    """The demo; SIGINT/SIGTERM/SIGHUP (from the moment it starts) stop every process it started and
    make the exit code 128 + the signal number."""
    with StopFlag() as stop:
        code = _run(opts, ros_args, stop)
        if code == 0 and stop.received is not None:  # arrived while the outputs were written
            print(f"keyseg demo: interrupted ({signal.Signals(stop.received).name}) after every process "
                  "had stopped", file=sys.stderr)
            return 128 + stop.received
        return code


def _run(opts: argparse.Namespace, ros_args: list[str] | None, stop: StopFlag) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    start = time.monotonic()
    out: Path = opts.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        _clear_previous(out)
        (out / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        print(f"keyseg demo: error: cannot write the output folder {out}: {exc}", file=sys.stderr)
        return 1
    _use_shipped_profile()
    ns = "/" + opts.namespace.strip("/")
    print(f"keyseg demo: {opts.queries} reasoning queries about generated scenes ({SPLIT} split: held-out "
          f"backgrounds and phrasings, seed {opts.seed}), camera {opts.rate:g} Hz at "
          f"{SCENE_SIZE[0]}x{SCENE_SIZE[1]}, namespace {ns}", flush=True)
    procs = Processes(out / "logs")
    ros_node = executor = thread = demo = None
    spinning = threading.Event()
    items: list[Item] = []
    code, failure = 0, None

    def spin() -> None:
        while spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    def interrupted(signum: int, when: str) -> str:
        return f"interrupted ({signal.Signals(signum).name}){when}: stopping every process the demo started"

    try:
        stop.check()
        rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
        ros_node = rclpy.create_node(f"keyseg_demo_{os.getpid()}")
        collector = Collector(ros_node, ns)
        executor = SingleThreadedExecutor()
        executor.add_node(ros_node)
        spinning.set()
        thread = threading.Thread(target=spin, name="keyseg_demo_spin", daemon=True)
        thread.start()
        demo = Demo(opts, ros_node, collector, procs, stop)
        stop.check()
        demo.start_processes()
        t_scenes = time.monotonic()
        try:
            items = make_items(opts.queries, opts.seed, out / "scenes", stop.check)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DemoError(f"cannot make the demo's scenes: {exc}") from exc
        print(f"scenes: {len(items)} generated in {time.monotonic() - t_scenes:.1f} s "
              f"({out / 'scenes'})", flush=True)
        demo.wait_ready(start)
        demo.warm_up(items[0])
        for item in items:
            demo.ask(item)
        stop.check()
    except Interrupted as exc:
        code, failure = 128 + exc.signum, interrupted(exc.signum, "")
    except DemoError as exc:
        code, failure = 1, str(exc)
    finally:
        # From here on a signal is only noted: the clean-up must finish.
        if failure:
            print(f"keyseg demo: {failure}", file=sys.stderr, flush=True)
        procs.stop_all()
        spinning.clear()
        if thread is not None:
            thread.join()
        if executor is not None:
            executor.shutdown()
        if ros_node is not None:
            ros_node.destroy_node()
        rclpy.try_shutdown()
    if not code and stop.received is not None:  # arrived during the clean-up: still an interruption
        code = 128 + stop.received
        print(f"keyseg demo: {interrupted(stop.received, ' while it stopped its processes')}",
              file=sys.stderr, flush=True)
    if code:
        started = ", ".join(f"{p['name']} pid {p['pid']}" for p in procs.report())
        print(f"keyseg demo: stopped the {len(procs.started)} process(es) it had started"
              + (f" ({started})" if started else "") + f"; logs in {out / 'logs'}", file=sys.stderr)
        return code
    unclean = [p for p in procs.report() if p["exit_code"] != 0]
    rows = [score(item, demo.collector) for item in items]
    latencies = [r["latency_ms"] for r in rows]
    summary = {
        "written_by": WRITTEN_BY,
        "model": demo.model, "untrained": bool(demo.untrained), "device": opts.device,
        "split": SPLIT, "seed": opts.seed, "scene_size": list(SCENE_SIZE), "rate_hz": opts.rate,
        "hold": opts.hold, "namespace": ns, "attached": bool(opts.attach),
        "keywords_right": sum(r["correct"] for r in rows),
        "keyword_accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4),
        "mean_iou": round(float(np.mean([r["iou"] for r in rows])), 4),
        "median_latency_ms": round(float(np.median(latencies)), 1),
        "median_first_answer_s": round(float(np.median([r["first_answer_s"] for r in rows])), 2),
        "topics": demo.collector.counts(),
        "node_ready_s": round(demo.timings.get("node_ready_s", 0.0), 2),
        "warmup_s": round(demo.timings.get("warmup_s", 0.0), 2),
        "wall_s": round(time.monotonic() - start, 1),
        "processes": procs.report(),
    }
    paths = write_outputs(out, items, rows, summary)
    print()
    print(format_table(rows))
    print()
    print(f"keywords right {summary['keywords_right']}/{len(rows)}, mean IoU {summary['mean_iou']:.2f}, "
          f"median latency {summary['median_latency_ms']:.0f} ms (frame sent to result received), first "
          f"answer {summary['median_first_answer_s']:.1f} s after the query; "
          f"model {summary['model']}" + (" (UNTRAINED weights)" if summary["untrained"] else ""))
    print(f"wrote {paths['contact_sheet']}, {paths['summary_json']}, {paths['summary_csv']} and "
          f"{len(rows)} overlays ({summary['wall_s']:.0f} s)")
    if unclean:
        names = ", ".join(f"{p['name']} (exit code {p['exit_code']})" for p in unclean)
        print(f"keyseg demo: not every process stopped cleanly: {names}; logs in {out / 'logs'}",
              file=sys.stderr)
        return 1
    return 0


def main(args: list[str] | None = None) -> int:
    """`args` as sys.argv (program name first, ROS arguments allowed)."""
    ros_args = sys.argv if args is None else args
    parser = build_parser()
    opts = parser.parse_args(remove_ros_args(ros_args)[1:])
    problem = argument_problem(opts)
    if problem:
        parser.error(problem)
    return run(opts, ros_args)


if __name__ == "__main__":
    sys.exit(main())
