"""Runs keyseg_node's real `main()` many times in one process and stops each run with a real signal.

Used by test_shutdown.py (a process start costs ~5 s of imports; a cycle here costs well under
one). Each cycle: a fresh ROS context, `keyseg_ros.node.run.main()` on the main thread with the real
tiny predictor (loaded once and reused), and a driver thread with its own context that brings the
node into the state under test, then sends SIGINT or SIGTERM to this process, exactly as Ctrl-C or
`ros2 launch`/systemd would. Checks per cycle: main() returned 0, the inference thread is gone,
no thread raised, and in the `service_wait` case the waiting client got an answer.

Usage: python shutdown_runner.py CASE:SIGNAL[xN] ...   (CASE: unconfigured, inactive, mid_frame,
service_wait; SIGNAL: INT or TERM). Prints one JSON line per cycle, then "ALL CYCLES OK".
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions

from keyseg_ros.node import inference
from keyseg_ros.node import run as keyseg_node

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ros_harness as h  # noqa: E402

TIMEOUT = 60.0
thread_errors: list[str] = []


def _excepthook(args) -> None:
    thread_errors.append(f"{args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: "
                         f"{args.exc_value}")


threading.excepthook = _excepthook

_predictors: dict = {}
_real_load = inference.load_predictor


def _cached_load(param):
    """The real predictor, built once: the cycles test shutdown, not model loading."""
    key = param("model")
    if key not in _predictors:
        _predictors[key] = _real_load(param)
    return _predictors[key]


inference.load_predictor = _cached_load


class Driver:
    """The test side: its own context and node, spun on a background thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("shutdown_driver", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._running = False
        self._thread.join()
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_cycle(driver: Driver, case: str, signame: str, index: int) -> dict:
    from keyseg_ros.srv import Segment
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    ns = f"/shutdown_{os.getpid()}_{index}"
    params = ["model:=config:tiny", "test_frame_delay:=30.0"]
    if case in ("unconfigured", "inactive"):
        params.append("autostart:=false")
    args = ["keyseg_node", "--ros-args", "-r", f"__ns:={ns}", *[a for p in params for a in ("-p", p)]]
    holder: dict = {}
    ready = threading.Event()
    outcome: dict = {"case": case, "signal": signame}
    errors: list[str] = []

    def on_spin(node) -> None:
        if case == "inactive":
            node.trigger_configure()
        holder["node"] = node
        ready.set()

    def drive() -> None:
        try:
            _wait(ready.is_set, "the node to spin")
            outcome["spin_s"] = round(time.monotonic() - start, 3)
            node = holder["node"]
            if case == "mid_frame":
                images = driver.node.create_publisher(Image, f"{ns}/image", qos_profile_sensor_data)
                query = driver.node.create_publisher(String, f"{ns}/query", 10)
                _wait(lambda: images.get_subscription_count() and query.get_subscription_count(),
                      "the node's subscriptions")
                outcome["matched_s"] = round(time.monotonic() - start, 3)
                query.publish(String(data="the cup"))
                deadline = time.monotonic() + TIMEOUT
                while not node.busy.is_set():  # a stream, as a camera would send
                    if time.monotonic() > deadline:
                        raise TimeoutError("the node never started on a frame")
                    images.publish(h.make_image(64, 48))
                    node.busy.wait(0.1)
                driver.node.destroy_publisher(images)
                driver.node.destroy_publisher(query)
            elif case == "service_wait":
                client = driver.node.create_client(Segment, f"{ns}/segment")
                if not client.wait_for_service(timeout_sec=TIMEOUT):
                    raise TimeoutError("the segment service never appeared")
                future = client.call_async(Segment.Request(image=h.make_image(64, 48), query="the cup"))
                _wait(lambda: node.busy.is_set() and node._calls_waiting > 0,
                      "the service call to be in the model")
                holder["future"], holder["client"] = future, client
            outcome["state"] = node._state_machine.current_state[1]
            outcome["busy"] = node.busy.is_set()
            holder["signalled"] = time.monotonic()
            outcome["ready_s"] = round(holder["signalled"] - start, 3)
            os.kill(os.getpid(), getattr(signal, f"SIG{signame}"))
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{type(exc).__name__}: {exc}")
            os.kill(os.getpid(), signal.SIGINT)

    start = time.monotonic()
    thread = threading.Thread(target=drive, name="driver")
    thread.start()
    rc = keyseg_node.main(args, context=Context(), on_spin=on_spin)
    outcome["stop_s"] = round(time.monotonic() - holder.get("signalled", start), 3)
    thread.join(TIMEOUT)
    outcome["rc"] = rc
    outcome["inference_thread_alive"] = any(
        t.name == "keyseg_inference" and t.is_alive() for t in threading.enumerate())
    if "future" in holder:
        future = holder["future"]
        _wait(future.done, "the answer to the waiting service call")
        response = future.result()
        outcome["service_answer"] = f"{response.success}: {response.message}"
        driver.node.destroy_client(holder["client"])
    outcome["errors"] = errors + thread_errors[:]
    thread_errors.clear()
    return outcome


def _cycle_ok(case: str, outcome: dict) -> bool:
    expected_state = {"unconfigured": "unconfigured", "inactive": "inactive"}.get(case, "active")
    return (outcome["rc"] == 0 and not outcome["inference_thread_alive"] and not outcome["errors"]
            and outcome.get("state") == expected_state
            and (case not in ("mid_frame", "service_wait") or outcome.get("busy"))
            and (case != "service_wait" or outcome.get("service_answer") in (
                "True: ", "False: node is shutting down")))


def main(argv: list[str]) -> int:
    plan = []
    for item in argv:
        spec, _, count = item.partition("x")
        case, _, signame = spec.partition(":")
        plan += [(case, signame)] * int(count or 1)
    failed = 0
    for index, (case, signame) in enumerate(plan):
        driver = Driver()  # a participant as new as the node's: discovery takes 0.1 s, not 2-3 s
        try:
            outcome = run_cycle(driver, case, signame, index)
        finally:
            driver.close()
        ok = _cycle_ok(case, outcome)
        failed += not ok
        print(json.dumps({"ok": ok, **outcome}), flush=True)
    if failed:
        print(f"{failed} CYCLE(S) FAILED", flush=True)
        return 1
    print("ALL CYCLES OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
