"""`ros2 run keyseg_ros query "the cup I can drink from"`: send a query to keyseg_node.

Does what a text or voice front end does: publish std_msgs/String on the node's `query` topic
(or std_msgs/Empty on `clear_query` with --clear). Without a TEXT argument it reads one query per
line from stdin, so `speech_to_text | ros2 run keyseg_ros query` works too.
"""

from __future__ import annotations

import argparse
import sys
import time

import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.utilities import remove_ros_args
from std_msgs.msg import Empty, String

from keyseg_ros import qos


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


def _wait_for_subscriber(node: Node, publisher, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True


def _send(node: Node, publisher, msg, what: str) -> None:
    publisher.publish(msg)
    # Reliable delivery: wait until every matched subscriber has the message before exiting.
    if not publisher.wait_for_all_acked(Duration(seconds=5.0)):
        node.get_logger().warning(f"{what} was not acknowledged by every subscriber within 5 s")
    print(f"{what} -> {publisher.topic_name} ({publisher.get_subscription_count()} subscriber(s))")


def main(args: list[str] | None = None) -> int:
    argv = remove_ros_args(sys.argv if args is None else args)[1:]
    opts = build_parser().parse_args(argv)
    rclpy.init(args=args)
    node = Node("keyseg_query")
    namespace = "/" + opts.namespace.strip("/") if opts.namespace.strip("/") else ""
    try:
        if opts.clear:
            publisher = node.create_publisher(Empty, f"{namespace}/clear_query", qos.query_publisher())
        else:
            publisher = node.create_publisher(String, f"{namespace}/query", qos.query_publisher())
        if not _wait_for_subscriber(node, publisher, opts.wait):
            print(f"query: error: nobody subscribes to {publisher.topic_name} after {opts.wait:g} s "
                  "(is keyseg_node running and active, in the same ROS_DOMAIN_ID?)", file=sys.stderr)
            return 1
        if opts.clear:
            _send(node, publisher, Empty(), "clear")
        elif opts.text is not None:
            _send(node, publisher, String(data=opts.text), f"query {opts.text!r}")
        else:
            for line in sys.stdin:
                if line.strip():
                    _send(node, publisher, String(data=line.strip()), f"query {line.strip()!r}")
        if opts.keep:
            rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
