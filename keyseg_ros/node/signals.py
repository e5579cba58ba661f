"""A stop signal recorded as a flag: the tools' and the node's shared signal handling.

rclpy's own handler shuts the context down inside the signal handler, so a publish racing it fails
with "publisher's context is invalid" (a traceback, exit code 1). Here the handler only records
the first signal: it raises nothing and takes no lock. The caller's loop looks at the flag and
stops in order, then shuts the context down itself. Handlers are installed only from the main
thread and put back on exit.
"""
from __future__ import annotations

import signal
import threading
import time


class StopSignals:
    """Context manager: `received` is the first stop signal's name (None until one arrives)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = None
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received = self._label(signum)

    def _label(self, signum: int):
        return signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.received is not None

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds`, or less when a stop arrives (checked every 50 ms at most)."""
        end = time.monotonic() + seconds
        while not self:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
