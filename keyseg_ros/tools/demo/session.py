"""One demo run's steps against the processes: start keyseg_node (unless attached) and the query
tool, wait until the node is active, warm the model up, then ask each query while its scene plays.

A query is held until the node has answered --hold frames of its scene. A result belongs to a query
when its `query` field and its header's frame_id (the scene) both match, so a frame answered for
the previous query or scene never counts. Every wait polls the stop flag and watches the processes
it depends on, so a signal, a process that exits or a deadline ends it with one plain message.
"""

from __future__ import annotations

import argparse
import queue
import re
import signal
import time
from collections.abc import Callable

from rclpy.node import Node

from keyseg_ros.node.signals import StopSignals
from keyseg_ros.tools.common import module_command, node_command, topic_prefix
from keyseg_ros.tools.demo.collector import Collector
from keyseg_ros.tools.demo.processes import Proc, Processes
from keyseg_ros.tools.demo.scenes import Item
from keyseg_ros.tools.demo.scoring import score, shown


class DemoError(RuntimeError):
    """A failure told to the user in one plain message (no traceback); exit code 1."""


class Interrupted(BaseException):
    """SIGINT/SIGTERM/SIGHUP arrived: stop everything and exit 128 + signal number.

    Raised only by `StopFlag.check()` at the demo's own wait points, never from a signal handler.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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


def _fail_on_exit(proc: Proc | None, what: str) -> None:
    """A process the demo waits on exited: a DemoError with its log."""
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
    """The run's state: the processes it started, the model the node reports, its timings."""

    def __init__(self, opts: argparse.Namespace, ros_node: Node, collector: Collector, procs: Processes,
                 stop: StopFlag | None = None) -> None:
        self.opts, self.ros, self.collector, self.procs = opts, ros_node, collector, procs
        self.stop = stop if stop is not None else StopFlag()
        self.ns = topic_prefix(opts.namespace)
        self.node: Proc | None = None
        self.query_tool: Proc | None = None
        self.model, self.untrained = opts.model or "", None
        self.asked = False  # a query was sent
        self.timings: dict[str, float] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def _wait(self, condition: Callable[[], bool], timeout: float, on_timeout: Callable[[], DemoError], *,
              watch: tuple = ()) -> None:
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
            params = {"device": self.opts.device}
            if self.opts.model:
                params["model"] = self.opts.model
            self.node = self.procs.start("keyseg_node", node_command(self.ns, params))
            model = self.opts.model or "the shipped KeySeg-Tiny (keyseg_core's default model)"
            self.say(f"keyseg_node: starting with {model} on {self.opts.device} (pid {self.node.pid}, "
                     f"log {self.node.log})")
        # The tool waits for the node's query subscription; longer than we do, so that our own
        # timeout (with its better message) comes first.
        self.query_tool = self.procs.start("query", module_command(
            "keyseg_ros.tools.query",
            ["--namespace", self.ns, "--wait", f"{self.opts.timeout + 30:g}", "--ros-args", "-r",
             "__node:=keyseg_demo_query"]), feed=True)

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
        player = self.procs.start(f"image_player_{item.stem}", module_command(
            "keyseg_ros.tools.image_player",
            [str(item.scene_path), "--topic", f"{self.ns}/image", "--rate", f"{self.opts.rate:g}", "--loop",
             "--frame-id", item.frame_id, "--wait", f"{self.opts.timeout:g}",
             "--ros-args", "-r", f"__node:=keyseg_demo_camera_{item.index:02d}"]))
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
                 f"{shown(row)} ({mark}), IoU {row['iou']:.2f}, "
                 f"{row['latency_ms']:.0f} ms")
