"""What the tools share: the Fast DDS profile, namespaces, waiting for keyseg_node's subscription,
a node spun in the background, and keyseg_node as a child process.

rclpy is imported inside the functions that need it: voice_query --dry-run runs without ROS, and
node_bench and soak set the Fast DDS profile before rclpy starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from keyseg_ros.node.signals import StopSignals

NODE_MODULE = "keyseg_ros.node"  # `python -m keyseg_ros.node` runs keyseg_node
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def use_shipped_profile(*, index_required: bool, file_required: bool) -> None:
    """The package's Fast DDS profile (share/keyseg_ros/config/fastdds.xml: camera-sized frames on
    one host) for this process and those it starts, unless the environment names one.

    index_required: raise when keyseg_ros is not in the ament index (else the environment's
    settings stay). file_required: name the profile only when the file exists.
    """
    if any(os.environ.get(name) for name in PROFILE_VARIABLES):
        return
    try:
        from ament_index_python.packages import get_package_share_directory

        share = get_package_share_directory("keyseg_ros")
    except Exception:  # noqa: BLE001 - without the index the environment's settings stay
        if index_required:
            raise
        return
    profile = Path(share) / "config" / "fastdds.xml"
    if file_required and not profile.is_file():
        return
    for name in PROFILE_VARIABLES:
        os.environ[name] = str(profile)


def topic_prefix(namespace: str) -> str:
    """`namespace` as the prefix of absolute topic names: /keyseg for keyseg or /keyseg/, "" for /."""
    name = namespace.strip("/")
    return "/" + name if name else ""


def wait_for_subscriber(node, publisher, timeout: float, stop: StopSignals | None = None) -> bool:
    """Spin `node` until `publisher` has a subscriber; False after `timeout` seconds or once `stop`
    has a signal."""
    import rclpy

    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline or stop:
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return True


class SpinThread:
    """`node` spun on a daemon thread, so the tool's main thread can wait, publish and start
    processes while the node's callbacks run."""

    def __init__(self, node, name: str) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self._executor = SingleThreadedExecutor()
        self._executor.add_node(node)
        self._spinning = threading.Event()
        self._spinning.set()
        self._thread = threading.Thread(target=self._spin, name=name, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._spinning.is_set():
            self._executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        """Stop spinning and shut the executor down; the node can be destroyed after this."""
        self._spinning.clear()
        self._thread.join()
        self._executor.shutdown()


def module_command(module: str, args: list[str]) -> list[str]:
    """argv for `python -m module args` with this interpreter (so with this environment's ROS)."""
    return [sys.executable, "-m", module, *args]


def node_command(namespace: str, params: dict[str, str]) -> list[str]:
    """argv that runs keyseg_node in `namespace` with these parameters (in this order)."""
    args = ["--ros-args", "-r", f"__ns:={namespace}"]
    for name, value in params.items():
        args += ["-p", f"{name}:={value}"]
    return module_command(NODE_MODULE, args)


def stop_process(proc: subprocess.Popen, timeout: float) -> int:
    """SIGINT (as Ctrl-C or `ros2 launch` would), then SIGKILL after `timeout` seconds; the exit
    code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
