"""Fixtures for the ROS 2 tests (tests/ros/): real rclpy, node processes, DDS on loopback.

Every test module here starts with `pytest.importorskip("rclpy")`: these tests skip only when
ROS 2 is not importable. The session builds the package (scripts/build_ros.sh, skipped when
install/ is up to date), isolates DDS per xdist worker, and imports messages from install/.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # ros_harness, whatever pytest's import mode

import ros_harness  # noqa: E402  (numpy only at import time; rclpy is imported lazily)


def pytest_configure(config: pytest.Config) -> None:
    # Before any rclpy.init in this process: Fast DDS reads the profile when it first starts.
    ros_harness.isolate_dds()


@pytest.fixture(scope="session")
def ros_install() -> Path:
    """install/ built from the current sources, importable from this process."""
    ros_harness.ensure_built()
    ros_harness.use_install_space()
    return ros_harness.INSTALL


@pytest.fixture(scope="session")
def ros_context(ros_install):
    """rclpy initialised once per worker, without rclpy's SIGINT handler (pytest keeps Ctrl-C)."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    yield
    rclpy.try_shutdown()


@pytest.fixture(scope="module")
def probe(ros_context, request):
    """A node of the test's own, spun in the background."""
    node = ros_harness.Probe(f"probe_{request.module.__name__.rsplit('.', 1)[-1]}")
    yield node
    node.close()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Working folder for processes started by a module (logs land here, not in the repo)."""
    return tmp_path_factory.mktemp("ros")
