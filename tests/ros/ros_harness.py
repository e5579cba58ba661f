"""Helpers for the ROS tests: the built install space, node processes, and an in-test probe node.

Everything here is real: the package is built with scripts/build_ros.sh, nodes run as their own
processes from the install space, and the probe talks to them over DDS on loopback.
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# `colcon test` runs these tests against the install space it built (CMakeLists.txt sets this);
# otherwise the session builds install/ at the repository root.
PREBUILT = os.environ.get("KEYSEG_ROS_INSTALL")
INSTALL = Path(PREBUILT) if PREBUILT else ROOT / "install"
SITE = INSTALL / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
PROFILE = ROOT / "config" / "fastdds.xml"
# Inputs of the build: a change to any of them triggers a rebuild before the tests run.
BUILD_INPUTS = ("package.xml", "CMakeLists.txt", "scripts/build_ros.sh", "msg", "srv", "keyseg_ros",
                "launch", "config", "interfaces")
STAMP = INSTALL / ".keyseg_ros_build_stamp"
_names = itertools.count()


def unique_namespace() -> str:
    """A namespace no other test (in this run or a concurrent one) uses."""
    return f"/t{os.getpid()}_{next(_names)}"


def isolate_dds() -> None:
    """Per-xdist-worker domain, loopback-only discovery, and the shipped Fast DDS profile."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    base = int(os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8] or "0", 16) or os.getpid()
    os.environ["ROS_DOMAIN_ID"] = str(1 + (base + index) % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    os.environ.pop("ROS_LOCALHOST_ONLY", None)  # deprecated in Jazzy; conflicts with the above


def _inputs_digest() -> str:
    digest = hashlib.sha256()
    for name in BUILD_INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) \
            if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def ensure_built() -> None:
    """Run scripts/build_ros.sh unless install/ matches the sources; one build at a time.

    This lock makes the up-to-date check, the build and the stamp one step across xdist workers.
    The script also takes its own lock (build/.build_ros.lock) around the build itself, which
    serialises it with builds that do not come through here (scripts/demo.sh, a manual build).
    Always this lock first, then the script's: the order never reverses, so no deadlock.
    """
    if PREBUILT:
        return
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / ".keyseg_ros_build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = _inputs_digest()
        if STAMP.is_file() and STAMP.read_text() == digest:
            return
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "build_ros.sh")], cwd=ROOT, capture_output=True,
            text=True, env={**os.environ, "PYTHON": sys.executable}, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError(f"scripts/build_ros.sh failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        STAMP.write_text(digest)


def use_install_space() -> None:
    """Make this (already running) process import keyseg_ros and its messages from install/.

    The generated libraries must be loadable by name; the dynamic loader read LD_LIBRARY_PATH at
    start-up, so load them once by path (they are then found by their soname).
    """
    pending = sorted([*(INSTALL / "lib").glob("libvision_msgs__*.so"),
                      *(INSTALL / "lib").glob("libkeyseg_ros__*.so")])
    while pending:  # dependency order is not known up front; retry until all load
        failed = []
        for lib in pending:
            try:
                ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(lib)
        if len(failed) == len(pending):
            raise RuntimeError(f"cannot load {failed[0]}")
        pending = failed
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    os.environ["LD_LIBRARY_PATH"] = f"{INSTALL / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}"
    os.environ["AMENT_PREFIX_PATH"] = f"{INSTALL}:{sys.prefix}"


def child_env() -> dict[str, str]:
    """Environment for node/tool processes: install space first, as `source install/setup.sh` does."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SITE), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    return env


def executable(name: str) -> str:
    return str(INSTALL / "lib" / "keyseg_ros" / name)


@dataclass
class Process:
    """A keyseg executable running from the install space; output goes to a log file."""

    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, name: str, args: list[str], workdir: Path) -> Process:
        log = workdir / f"{name}_{next(_names)}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([executable(name), *args], cwd=workdir, env=child_env(),
                                    stdout=out, stderr=subprocess.STDOUT)
        return cls(proc, log)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGINT, as Ctrl-C or `ros2 launch` would; returns (exit code, output)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"process did not stop on SIGINT:\n{self.output()[-3000:]}")
        return self.proc.returncode, self.output()

    def assert_clean_stop(self) -> None:
        rc, out = self.stop()
        assert rc == 0, f"exit code {rc} after SIGINT:\n{out[-3000:]}"
        assert "Traceback" not in out, out[-3000:]


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               proc: Process | None = None) -> None:
    """Poll `condition` until true; fail naming `what` (with the process log if given)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.proc.returncode}) while waiting for "
                                 f"{what}:\n{proc.output()[-3000:]}")
        if time.monotonic() > deadline:
            log = f":\n{proc.output()[-3000:]}" if proc is not None else ""
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{log}")
        time.sleep(0.02)


class Collector:
    """Keeps every message received on one topic."""

    def __init__(self) -> None:
        self.msgs: list = []
        self._lock = threading.Lock()

    def __call__(self, msg) -> None:
        with self._lock:
            self.msgs.append(msg)

    def find(self, predicate: Callable[[object], bool]):
        with self._lock:
            return next((m for m in self.msgs if predicate(m)), None)


class Probe:
    """The test's own node, spun on a background thread."""

    def __init__(self, name: str) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(name)
        self._executor = SingleThreadedExecutor()
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._running = True
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self._executor.spin_once(timeout_sec=0.05)

    def collect(self, msg_type, topic: str, qos=10) -> Collector:
        collector = Collector()
        self.node.create_subscription(msg_type, topic, collector, qos)
        return collector

    def publisher(self, msg_type, topic: str, qos=10):
        return self.node.create_publisher(msg_type, topic, qos)

    def call(self, srv_type, name: str, request, timeout: float = 30.0, resend_every: float | None = None):
        """The response to `request`. `resend_every` (idempotent requests only, e.g. GetState): send it
        again on a fresh client every so many seconds until `timeout`, because a request sent while DDS
        discovery between a new server and this client is only half done can be lost."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            wait = left if resend_every is None else min(resend_every, left)
            client, future = self.call_async(srv_type, name, request, max(left, 1.0))
            try:
                try:
                    wait_until(future.done, wait, f"a response from {name}")
                    return future.result()
                except AssertionError:
                    if resend_every is None or time.monotonic() >= deadline:
                        raise
            finally:
                self.node.destroy_client(client)

    def call_async(self, srv_type, name: str, request, timeout: float = 30.0):
        """(client, future) of a request sent once the service is there; destroy the client after."""
        client = self.node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            self.node.destroy_client(client)
            raise AssertionError(f"service {name} not available after {timeout} s")
        return client, client.call_async(request)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self._executor.shutdown()
        self.node.destroy_node()


def publish_until(publisher, make_msg: Callable[[], object], condition: Callable[[], bool],
                  timeout: float, what: str, proc: Process | None = None,
                  period: float = 0.25) -> None:
    """Publish a fresh message every `period` s until `condition` holds, like a camera stream.

    Best-effort frames may be lost while discovery settles; a stream makes tests robust to it.
    """
    deadline = time.monotonic() + timeout
    while True:
        publisher.publish(make_msg())
        try:
            wait_until(condition, min(period, max(0.0, deadline - time.monotonic())), what, proc)
            return
        except AssertionError:
            if time.monotonic() > deadline or (proc is not None and proc.proc.poll() is not None):
                raise


_stamps = itertools.count(1)


def make_image(width: int, height: int, encoding: str = "rgb8", *, pad: int = 0,
               frame_id: str = "test_camera"):
    """A sensor_msgs/Image with a gradient picture, a unique stamp, and `pad` bytes per row."""
    from sensor_msgs.msg import Image

    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding, 3)
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([(xs * 255 // max(width, 1)), (ys * 255 // max(height, 1)),
                       np.full_like(xs, 128), np.full_like(xs, 255)][:channels], axis=-1)
    rows = np.zeros((height, width * channels + pad), np.uint8)
    rows[:, : width * channels] = pixels.reshape(height, width * channels)
    msg = Image(height=height, width=width, encoding=encoding, step=width * channels + pad)
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = next(_stamps)
    msg.data = array.array("B", rows.tobytes())
    return msg


def qos_sensor_data():
    """Best effort, keep last 5: what a camera consumer subscribes with."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    return QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)


class Session:
    """The node process plus the probe's publishers and collectors for its topics."""

    def __init__(self, probe, proc: Process, ns: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from keyseg_ros.msg import KeywordStamped, SegmentationResult
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from std_msgs.msg import Empty, String

        self.probe, self.proc, self.ns = probe, proc, ns
        self.image = probe.publisher(Image, f"{ns}/image", qos_profile_sensor_data)
        self.query = probe.publisher(String, f"{ns}/query", 10)
        self.clear = probe.publisher(Empty, f"{ns}/clear_query", 10)
        self.masks = probe.collect(Image, f"{ns}/mask")
        self.keywords = probe.collect(KeywordStamped, f"{ns}/keyword")
        self.results = probe.collect(SegmentationResult, f"{ns}/result")
        self.overlays = probe.collect(Image, f"{ns}/overlay")
        self.diagnostics = probe.collect(DiagnosticArray, "/diagnostics")

    def send_query(self, text: str) -> None:
        from std_msgs.msg import String

        self.query.publish(String(data=text))

    def answer(self, query: str, make=lambda: make_image(64, 48), timeout: float = 30.0,
               send: bool = True):
        """Send `query` (unless already sent), then stream frames until one comes back answered
        for it; returns (frame, result)."""
        if send:
            self.send_query(query)
        sent = {}

        def frame():
            msg = make()
            sent[msg.header.stamp.sec] = msg
            return msg

        def result():
            return self.results.find(lambda r: r.query == query and r.header.stamp.sec in sent)

        publish_until(self.image, frame, lambda: result() is not None, timeout,
                        f"a result for query {query!r}", self.proc)
        found = result()
        return sent[found.header.stamp.sec], found

    def stats(self) -> dict[str, str]:
        """Latest diagnostics values of this node ({} before the first)."""
        name = f"{self.ns}/keyseg_node: segmentation"
        for array in reversed(list(self.diagnostics.msgs)):
            for status in array.status:
                if status.name == name:
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def count(self, key: str) -> int:
        return int(self.stats().get(key, 0))

    def settled_count(self, key: str, timeout: float = 15.0) -> int:
        """Counter `key` as of now: diagnostics are periodic, so the latest one may predate events
        already seen on other topics; the second report of this node after the call cannot."""
        name = f"{self.ns}/keyseg_node: segmentation"

        def reports() -> int:
            return sum(s.name == name for a in list(self.diagnostics.msgs) for s in a.status)

        seen = reports()
        wait_until(lambda: reports() >= seen + 2, timeout, "two fresh diagnostics reports", self.proc)
        return self.count(key)

    def wait_count_above(self, key: str, before: int, publish=None) -> None:
        """Wait for diagnostics to show counter `key` > before (re-sending via `publish`)."""
        what = f"diagnostics {key} > {before}"
        if publish is None:
            wait_until(lambda: self.count(key) > before, 15, what, self.proc)
        else:
            publish_until(*publish, lambda: self.count(key) > before, 15, what, self.proc)

    def wait_subscribed(self, timeout: float = 90.0) -> None:
        """Until the node's image and query subscriptions match the probe's publishers."""
        wait_until(lambda: self.image.get_subscription_count() > 0
                   and self.query.get_subscription_count() > 0, timeout,
                   "keyseg_node to subscribe", self.proc)

    def set_parameter(self, name: str, value):
        """SetParameters on the node; returns the SetParametersResult."""
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request = SetParameters.Request(parameters=[Parameter(name=name, value=pv)])
        return self.probe.call(SetParameters, f"{self.ns}/keyseg_node/set_parameters", request).results[0]

    def change_state(self, transition_id: int, timeout: float = 90.0) -> None:
        """One lifecycle transition through the node's change_state service; must succeed."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        response = self.probe.call(ChangeState, f"{self.ns}/keyseg_node/change_state",
                                   ChangeState.Request(transition=Transition(id=transition_id)),
                                   timeout=timeout)
        assert response.success, f"transition {transition_id} failed:\n{self.proc.output()[-3000:]}"


def start_node(probe, workdir: Path, *params: str, ns: str | None = None) -> Session:
    """keyseg_node (install space) in a fresh namespace with `-p` params, plus the probe's side."""
    ns = ns or unique_namespace()
    proc = Process.start("keyseg_node", ["--ros-args", "-r", f"__ns:={ns}",
                                  *[a for p in params for a in ("-p", p)]], workdir)
    return Session(probe, proc, ns)
