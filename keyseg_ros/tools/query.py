"""`ros2 run keyseg_ros query "the cup I can drink from"`: send a query to keyseg_node.

Does what a text or voice front end does: publish std_msgs/String on the node's `query` topic
(or std_msgs/Empty on `clear_query` with --clear). Without a TEXT argument it reads one query per
line from stdin, so `speech_to_text | ros2 run keyseg_ros query` works too. SIGINT or SIGTERM
stops it between two queries (or while it waits): exit code 0, no traceback.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections.abc import Iterator

import rclpy
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args
from std_msgs.msg import Empty, String

from keyseg_ros.node import qos
from keyseg_ros.node.signals import StopSignals
from keyseg_ros.tools.common import topic_prefix, wait_for_subscriber

ACK_TIMEOUT_S = 5.0
POLL_S = 0.1  # longest time between two looks at the stop flag


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="query", description=__doc__.split("\n\n")[0])
    parser.add_argument("text", nargs="?", help="the query; omit to read one query per line from stdin")
    parser.add_argument("--namespace", default="/keyseg",
                        help="namespace of keyseg_node (default: /keyseg, as in camera.launch.py)")
    parser.add_argument("--clear", action="store_true", help="clear the active query instead")
    parser.add_argument("--wait", type=float, default=10.0, metavar="S",
                        help="seconds to wait for keyseg_node to subscribe (default: 10)")
    parser.add_argument("--keep", action="store_true",
                        help="stay running after publishing (until Ctrl-C) so nodes that start "
                             "later with query_durability=transient_local still get the query")
    return parser


def _send(node: Node, publisher, msg, what: str, stop: StopSignals) -> None:
    publisher.publish(msg)
    # Reliable delivery: wait until every matched subscriber has the message before going on
    # (in short steps, so that a stop request is seen).
    deadline = time.monotonic() + ACK_TIMEOUT_S
    acked = False
    while not acked and not stop and time.monotonic() < deadline:
        acked = publisher.wait_for_all_acked(Duration(seconds=POLL_S))
    if not acked and not stop:
        node.get_logger().warning(f"{what} was not acknowledged by every subscriber within "
                                  f"{ACK_TIMEOUT_S:g} s")
    print(f"{what} -> {publisher.topic_name} ({publisher.get_subscription_count()} subscriber(s))",
          flush=True)


def read_lines(stop: StopSignals, stream=None) -> Iterator[str]:
    """Lines from `stream` (stdin) as they arrive, until its end or a stop request.

    A plain `for line in sys.stdin` would block in read() and resume it after a signal, so a tool
    waiting for its next line could not stop; here the descriptor is polled every POLL_S.
    """
    stream = sys.stdin if stream is None else stream
    if stream is None:
        return
    fd, encoding = stream.fileno(), stream.encoding or "utf-8"
    pending = b""
    while not stop:
        ready, _, _ = select.select([fd], [], [], POLL_S)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            if stop:
                return
            yield line.decode(encoding, errors="replace")
    if pending and not stop:
        yield pending.decode(encoding, errors="replace")


def main(args: list[str] | None = None) -> int:
    argv = remove_ros_args(sys.argv if args is None else args)[1:]
    opts = build_parser().parse_args(argv)
    with StopSignals() as stop:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        node = None
        namespace = topic_prefix(opts.namespace)
        try:
            node = Node("keyseg_query")
            if opts.clear:
                publisher = node.create_publisher(Empty, f"{namespace}/clear_query", qos.query_publisher())
            else:
                publisher = node.create_publisher(String, f"{namespace}/query", qos.query_publisher())
            if not wait_for_subscriber(node, publisher, opts.wait, stop):
                if not stop:
                    print(f"query: error: nobody subscribes to {publisher.topic_name} after {opts.wait:g} s "
                          "(is keyseg_node running and active, in the same ROS_DOMAIN_ID?)", file=sys.stderr)
                    return 1
            elif opts.clear:
                _send(node, publisher, Empty(), "clear", stop)
            elif opts.text is not None:
                _send(node, publisher, String(data=opts.text), f"query {opts.text!r}", stop)
            else:
                for line in read_lines(stop):
                    text = line.strip()
                    if text:
                        _send(node, publisher, String(data=text), f"query {text!r}", stop)
            while opts.keep and not stop:
                rclpy.spin_once(node, timeout_sec=POLL_S)
            if stop:
                node.get_logger().info(f"{stop.received} received: stopping")
        finally:
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
