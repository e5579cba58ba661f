"""The testing parameters at work (params.py marks them `testing`): fault drills for the test suite.

test_inference_faults makes the next N model calls raise a simulated out-of-memory error (the node
must log it once and keep serving); test_frame_delay holds every model call after the model ran
(keeps a frame mid-inference for shutdown tests). At their defaults they do nothing; set, the node
says so at start-up. Kept out of the node so its inference path reads as what it does in use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rclpy.impl.rcutils_logger import RcutilsLogger

from keyseg_ros.node.params import PARAMS


class SimulatedOutOfMemory(RuntimeError):
    """Raised by the `test_inference_faults` drill when torch is not importable."""


def out_of_memory_error() -> Exception:
    """An out-of-memory error as torch raises it on a GPU (parameter `test_inference_faults`)."""
    message = ("CUDA out of memory. Tried to allocate 2.00 GiB (simulated by the "
               "test_inference_faults parameter)")
    try:
        import torch

        return torch.OutOfMemoryError(message)
    except (ImportError, AttributeError):
        return SimulatedOutOfMemory(message)


class Drills:
    """The drills of one node: `param` reads its parameters (declared before this is made)."""

    def __init__(self, param: Callable[[str], Any], logger: RcutilsLogger) -> None:
        self._param = param
        self._faults_left = param("test_inference_faults")
        for spec in PARAMS:
            if spec.testing and param(spec.name) != spec.default:
                logger.warning(
                    f"testing parameter '{spec.name}' = {param(spec.name)!r} is set: "
                    "frames are slowed down or fail on purpose")

    def parameter_changed(self, name: str, value: Any) -> None:
        """A run-time change of test_inference_faults starts a new countdown."""
        if name == "test_inference_faults":
            self._faults_left = value

    def before_model_call(self) -> None:
        """Raise the simulated out-of-memory error while the countdown lasts."""
        if self._faults_left > 0:
            self._faults_left -= 1
            raise out_of_memory_error()

    def after_model_call(self, halt: threading.Event) -> None:
        """Hold the call `test_frame_delay` seconds; `halt` (shutdown) cuts it short."""
        delay = self._param("test_frame_delay")
        if delay > 0:
            halt.wait(delay)
