"""QoS profiles of keyseg's topics, in one place so the node, the tools and the docs agree."""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
_DURABILITY = {"volatile": DurabilityPolicy.VOLATILE, "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}


def images(node: Node) -> QoSProfile:
    """Camera input: sensor-data style (keep last `queue_depth`), reliability from a parameter.

    Best effort matches both best-effort and reliable camera publishers; `reliable` is for
    setups that must not lose frames and only matches reliable publishers.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=node.get_parameter("queue_depth").value,
        reliability=_RELIABILITY[node.get_parameter("image_reliability").value],
        durability=DurabilityPolicy.VOLATILE,
    )


def queries(node: Node) -> QoSProfile:
    """Queries and clears: reliable (a lost query is a silent failure), depth 1, durability from a
    parameter (transient_local also gets the last query published before the node started)."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=_DURABILITY[node.get_parameter("query_durability").value],
    )


def query_publisher() -> QoSProfile:
    """What the `query` tool publishes with: reliable + transient_local, so it matches every query
    subscriber and a transient_local one that starts later still gets the last query."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def results() -> QoSProfile:
    """Outputs: reliable keep-last 5, which both reliable (RViz's default) and best-effort
    subscribers accept."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=5,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def camera(reliable: bool) -> QoSProfile:
    """What the image player publishes with: sensor data (best effort, keep last 1) by default."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
