"""keyseg_node's process: signals set a flag, the main loop spins, shutdown runs in order.

Shutdown (SIGINT or SIGTERM, in any state): the signal only sets a flag. The main loop then stops
the inference thread and joins it, lets waiting `segment` calls answer, and only then destroys the
node and shuts the ROS context down, so nothing publishes on a dead context. Exit code 0.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

import rclpy
from rclpy.context import Context
from rclpy.exceptions import ParameterException
from rclpy.executors import MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions

from keyseg_ros.node.lifecycle import SHUTDOWN_TIMEOUT_S, KeySegNode
from keyseg_ros.node.signals import StopSignals


class _StopSignals(StopSignals):
    """SIGINT/SIGTERM set a flag instead of tearing the ROS context down at once.

    rclpy's own handler shuts the context down inside the signal handler, while the inference
    thread may be about to publish ("publisher's context is invalid"). Here the main loop sees the
    flag and stops things in order. Handlers are installed only from the main thread and are put
    back afterwards.
    """

    def __init__(self) -> None:
        super().__init__()
        self.event = threading.Event()

    def _handle(self, signum, frame) -> None:
        super()._handle(signum, frame)
        self.event.set()


def _shut_down(node: KeySegNode | None, executor: MultiThreadedExecutor | None) -> None:
    """Stop in order: inference thread, waiting service calls, executor, then the node."""
    if node is None:
        return
    node.begin_shutdown()
    deadline = time.monotonic() + SHUTDOWN_TIMEOUT_S
    if executor is not None:
        # Keep spinning so waiting `segment` calls send their answers while the context lives.
        while not node.idle() and time.monotonic() < deadline:
            try:
                executor.spin_once(timeout_sec=0.05)
            except Exception:  # noqa: BLE001 - a failed callback must not stop the shutdown
                pass
    if executor is not None:
        # Callbacks already handed to the thread pool (a `segment` call sending its answer) finish
        # first, while the executor's guard condition still exists: they trigger it when done, and
        # rclpy's executor.shutdown destroys it without waiting for them (a callback still queued
        # then failed with InvalidHandle, printed as "exception was never retrieved").
        pool = getattr(executor, "_executor", None)
        if pool is not None:
            pool.shutdown(wait=True)
        executor.shutdown(timeout_sec=5.0)
    node.close()


def main(args: list[str] | None = None, *, context: Context | None = None,
         on_spin: Callable[[KeySegNode], None] | None = None) -> int:
    """Run the node until SIGINT/SIGTERM: exit 0; 1 if the model cannot load, 2 on a bad parameter.

    `context` (default: rclpy's global one) and `on_spin` (called with the node just before
    spinning) let tests and embedding code run the node in-process, several times.
    """
    context = context or rclpy.get_default_context()
    node = executor = None
    with _StopSignals() as stop:
        rclpy.init(args=args, context=context, signal_handler_options=SignalHandlerOptions.NO)
        try:
            try:
                node = KeySegNode(context=context)
            except ParameterException as exc:  # invalid value or type from the command line/YAML
                print(f"keyseg_node: error: {exc}", file=sys.stderr)
                return 2
            if node.get_parameter("autostart").value and not stop.event.is_set():
                if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                    node.get_logger().fatal("configure failed (see the error above); exiting")
                    return 1
                if not stop.event.is_set():
                    node.trigger_activate()
            executor = MultiThreadedExecutor(num_threads=4, context=context)
            executor.add_node(node)
            if on_spin is not None:
                on_spin(node)
            while not stop.event.is_set() and context.ok():
                try:
                    executor.spin_once(timeout_sec=0.1)
                except Exception as exc:  # noqa: BLE001 - a callback's error must not end the node
                    node.get_logger().error(f"a callback failed: {type(exc).__name__}: {exc}")
            if stop.received:
                node.get_logger().info(f"{stop.received} received: shutting down")
        finally:
            _shut_down(node, executor)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown(context=context)
    return 0


if __name__ == "__main__":
    sys.exit(main())
