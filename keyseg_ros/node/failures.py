"""Failed predictions, told once: a run of the same error is logged with its cause when it starts
and in one line when frames succeed again, so a failing model does not flood the log while the
node keeps serving (diagnostics count every failure)."""

from __future__ import annotations

import threading

from rclpy.impl.rcutils_logger import RcutilsLogger


class FailureLog:
    """Logs a run of failures once: the first with its cause, then one line when it is over.

    Failures of the same kind (exception type) that follow are only counted (diagnostics keep
    counting them); a different kind is logged as a new run.
    """

    def __init__(self, logger: RcutilsLogger) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._kind: str | None = None
        self._count = 0

    def failed(self, what: str, exc: BaseException, hint: str = "") -> None:
        """`what` failed with `exc`: logged if it starts a new run of failures."""
        kind = type(exc).__name__
        with self._lock:
            self._count += 1
            if kind == self._kind:
                return
            self._kind, self._count = kind, 1
        self._logger.error(
            f"{what} failed: {kind}: {exc}{hint}. The node keeps serving; further {kind} errors "
            "are counted in diagnostics (inference_errors) and logged again once frames succeed")

    def succeeded(self) -> None:
        """A prediction worked: ends a run of failures with one line saying how long it was."""
        with self._lock:
            if self._kind is None:
                return
            kind, count, self._kind, self._count = self._kind, self._count, None, 0
        self._logger.info(f"inference recovered after {count} failed prediction(s) ({kind})")


def free_accelerator_memory(exc: BaseException) -> str:
    """After an out-of-memory error, give the CUDA allocator's cached blocks back; a note for the
    log line saying so ("" when there was nothing to do)."""
    if "OutOfMemory" not in type(exc).__name__:
        return ""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
            return " (freed the CUDA allocator's cached memory)"
    except Exception:  # noqa: BLE001 - best effort; the error itself is already reported
        pass
    return ""
