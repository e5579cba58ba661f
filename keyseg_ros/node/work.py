"""The inference thread's units of work: a camera frame and a `segment` service request.

Callbacks put them in the mailbox (node/mailbox.py) and return at once; the inference thread takes
them out. They carry what the thread needs to serve them and, for a request, the handshake with
the callback that waits for its answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sensor_msgs.msg import CompressedImage, Image

from keyseg_ros.msg import SegmentationResult
from keyseg_ros.srv import Segment


@dataclass
class CameraFrame:
    """A camera message waiting for the model, with the time it arrived."""

    msg: Image | CompressedImage
    received: float

    @property
    def time(self) -> float:
        """The frame's time for the streaming clock: its header stamp (bag replay and sim time
        included), or its arrival time when it is not stamped."""
        stamp = self.msg.header.stamp
        return stamp.sec + stamp.nanosec * 1e-9 if stamp.sec or stamp.nanosec else self.received


@dataclass
class Job:
    """A `segment` service request waiting for the model.

    The worker fills `response` and sets `done`, unless the waiting callback gave up first
    (`abandoned`: deactivate or shutdown); `lock` makes the two exclusive, so a response is never
    changed after the callback returned it.
    """

    image: Image
    queries: list[str]
    response: Segment.Response
    done: threading.Event = field(default_factory=threading.Event)
    abandoned: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def finish(self, success: bool, message: str, results: list[SegmentationResult] | None = None) -> None:
        """The worker's answer; ignored when the callback gave up or it was answered already."""
        with self.lock:
            if self.abandoned or self.done.is_set():
                return
            self.response.success, self.response.message = success, message
            if results:
                self.response.result, self.response.results = results[0], results
            self.done.set()

    def abandon(self, message: str) -> None:
        """The callback's give-up (deactivate or shutdown); ignored once the worker answered."""
        with self.lock:
            if self.done.is_set():
                return
            self.abandoned = True
            self.response.success, self.response.message = False, message
            self.done.set()
