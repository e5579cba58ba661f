"""Colour image, depth and camera_info, matched by header stamp within a slop.

On a ROS install this is message_filters' ApproximateTimeSynchronizer. Where message_filters is
missing (the ROS 2 PyPI wheels have none), `ApproximateSync` below does the same job: each input
keeps its newest `queue_size` messages; a new message is matched with the closest stamp of every
other input, and the set is emitted (and removed) when all its stamps lie within `slop` seconds of
each other. Either way every message also goes to its own callback first, so colour frames reach
the 2D pipeline whether or not depth ever arrives.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rclpy.node import Node


def stamp_ns(msg: Any) -> int:
    """A message's header stamp in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


class ApproximateSync:
    """Approximate-time matching of `inputs` streams (see the module docstring)."""

    def __init__(self, inputs: int, queue_size: int, slop: float,
                 callback: Callable[..., None]) -> None:
        if inputs < 2 or queue_size < 1 or slop < 0:
            raise ValueError("ApproximateSync needs >= 2 inputs, queue_size >= 1 and slop >= 0")
        self._queues: list[dict[int, Any]] = [{} for _ in range(inputs)]
        self._queue_size = queue_size
        self._slop_ns = int(slop * 1e9)
        self._callback = callback
        self._lock = threading.Lock()

    def add(self, index: int, msg: Any) -> None:
        """One message of input `index`; calls back with one message per input when a set is whole."""
        stamp = stamp_ns(msg)
        with self._lock:
            queue = self._queues[index]
            queue[stamp] = msg
            while len(queue) > self._queue_size:
                del queue[min(queue)]
            chosen = [stamp if i == index else min(q, key=lambda s: abs(s - stamp), default=None)
                      for i, q in enumerate(self._queues)]
            if None in chosen or max(chosen) - min(chosen) > self._slop_ns:
                return
            matched = [q.pop(s) for q, s in zip(self._queues, chosen)]
        self._callback(*matched)


@dataclass
class SyncInput:
    """One synchronised input: message type, topic, QoS, and the callback every message gets."""

    msg_type: type
    topic: str
    qos: Any
    on_message: Callable[[Any], None]


def subscribe_synchronised(node: Node, inputs: Sequence[SyncInput], *, queue_size: int, slop: float,
                           on_set: Callable[..., None]) -> tuple[list, str]:
    """Subscriptions (to destroy with node.destroy_subscription) and which synchroniser runs them."""
    try:
        import message_filters
    except ImportError:
        sync = ApproximateSync(len(inputs), queue_size, slop, on_set)

        def feed(index: int, spec: SyncInput):
            def callback(msg) -> None:
                spec.on_message(msg)
                sync.add(index, msg)
            return callback

        subs = [node.create_subscription(s.msg_type, s.topic, feed(i, s), s.qos) for i, s in enumerate(inputs)]
        return subs, "keyseg_ros.node.sync.ApproximateSync (message_filters is not installed)"
    filters = []
    for spec in inputs:
        source = message_filters.Subscriber(node, spec.msg_type, spec.topic, qos_profile=spec.qos)
        source.registerCallback(spec.on_message)
        filters.append(source)
    message_filters.ApproximateTimeSynchronizer(filters, queue_size, slop).registerCallback(on_set)
    return [f.sub for f in filters], "message_filters.ApproximateTimeSynchronizer"
