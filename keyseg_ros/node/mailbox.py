"""Hand-off between the ROS callbacks and the inference thread: newest frame wins.

Camera callbacks only drop their message in here (O(1), never waiting on the model). The
inference thread takes one-shot service jobs first, then the newest frame; a frame replaced
before the model got to it is stale and reported as dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, TypeVar

FrameT = TypeVar("FrameT")
JobT = TypeVar("JobT")


class Mailbox(Generic[FrameT, JobT]):
    """One slot for the newest frame plus a FIFO of jobs, guarded by one condition variable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._frame: FrameT | None = None
        self._jobs: deque[JobT] = deque()
        self._closed = False

    def put_frame(self, frame: FrameT) -> bool:
        """Store `frame` as the newest; True when it replaced one not yet taken (a dropped frame)."""
        with self._cond:
            dropped = self._frame is not None
            self._frame = frame
            self._cond.notify()
        return dropped

    def put_job(self, job: JobT) -> None:
        """Queue a job; jobs are served before frames."""
        with self._cond:
            self._jobs.append(job)
            self._cond.notify()

    def get(self, timeout: float, frames_not_before: float = 0.0) -> FrameT | JobT | None:
        """Next job, else the newest frame once `time.monotonic() >= frames_not_before`.

        Returns None after `timeout` seconds with nothing to do, or at once when closed.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                if self._jobs:
                    return self._jobs.popleft()
                now = time.monotonic()
                if self._frame is not None and now >= frames_not_before:
                    frame, self._frame = self._frame, None
                    return frame
                if now >= deadline:
                    return None
                wake = deadline if self._frame is None else min(deadline, frames_not_before)
                self._cond.wait(wake - now)

    def clear_frame(self) -> None:
        """Forget the waiting frame (when the node deactivates)."""
        with self._cond:
            self._frame = None

    def drain_jobs(self) -> list[JobT]:
        """Take every job still queued (to answer them when the inference thread stops)."""
        with self._cond:
            jobs, self._jobs = list(self._jobs), deque()
        return jobs

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Wake the inference thread for good; `get` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
