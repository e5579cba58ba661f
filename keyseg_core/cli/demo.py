"""`keyseg demo`: keyseg_node answers reasoning queries about generated scenes, live over ROS 2.

keyseg_core never imports ROS, so this command only checks what the demo needs (rclpy, the built
keyseg_ros install space, scikit-image for the scene backgrounds, the model) and then runs the ROS
side, `python -m keyseg_ros.tools.demo`, in a subprocess with the install space's environment (what
`source install/setup.bash` sets). That process starts keyseg_node, an image player per scene and
the query tool, collects the published results and writes the outputs (docs/ros.md, "Demo").

Ctrl-C or SIGTERM stops the demo and every process it started; the exit code is then 128 + the
signal number.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

from keyseg_core.cli import demo_options

HELP = "run keyseg_node on a sequence of reasoning queries about generated scenes; print and save the scores"
REPO = Path(__file__).resolve().parents[2]  # the source checkout (keyseg_core is installed editable)
BUILD_HINT = "bash scripts/build_ros.sh"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's own options (demo_options.py), and where the built ROS package is."""
    demo_options.add_arguments(parser)
    parser.add_argument("--ros-install", default=None, metavar="DIR",
                        help="install space holding the built keyseg_ros package (default: the sourced "
                             "workspace's, else install/ of this checkout)")


def _site_packages(prefix: Path) -> Path | None:
    """The folder under an install space that holds the keyseg_ros Python package."""
    patterns = ("lib/python3*/site-packages", "local/lib/python3*/dist-packages",
                "lib/python3*/dist-packages")
    for pattern in patterns:
        for folder in sorted(prefix.glob(pattern)):
            if (folder / "keyseg_ros" / "__init__.py").is_file():
                return folder
    return None


def find_install(explicit: str | None) -> tuple[Path, Path]:
    """(install prefix, its site-packages) of the built keyseg_ros package; RuntimeError telling the
    command that builds it."""
    if explicit:
        candidates = [Path(explicit)]
    else:
        sourced = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
        candidates = [p for p in sourced if (p / "share" / "keyseg_ros" / "package.xml").is_file()]
        candidates.append(REPO / "install")
    for prefix in candidates:
        site = _site_packages(prefix)
        if site is not None and (prefix / "share" / "keyseg_ros" / "package.xml").is_file():
            if not (site / "keyseg_ros" / "tools" / "demo" / "main.py").is_file():
                raise RuntimeError(f"the keyseg_ros package in {prefix} was built before the demo existed: "
                                   f"rebuild it with `{BUILD_HINT}`")
            return prefix, site
    where = explicit or f"{REPO / 'install'} (or a sourced workspace)"
    raise RuntimeError(f"the keyseg_ros ROS 2 package is not built in {where}: build it with `{BUILD_HINT}` "
                       "(on a ROS install: colcon build, then source install/setup.bash)")


def stale_modules(site: Path) -> list[str]:
    """keyseg_ros modules of this checkout (paths under keyseg_ros/, subpackages included) that
    differ from the installed ones (an old build)."""
    source = REPO / "keyseg_ros"
    if not source.is_dir():
        return []
    stale = []
    for module in sorted(source.rglob("*.py")):
        name = module.relative_to(source)
        installed = site / "keyseg_ros" / name
        if not installed.is_file() or installed.read_bytes() != module.read_bytes():
            stale.append(name.as_posix())
    return stale


def check_prerequisites(args: argparse.Namespace) -> tuple[Path, Path]:
    """Everything the demo needs before anything starts; RuntimeError naming what is missing and the
    command that fixes it."""
    if importlib.util.find_spec("rclpy") is None:
        raise RuntimeError("rclpy (ROS 2) is not importable: run `bash scripts/install.sh` (installs the "
                           "ROS 2 Jazzy wheels, Python 3.11: pip install -e '.[ros]'), or on a ROS install "
                           "`source /opt/ros/jazzy/setup.bash`")
    if importlib.util.find_spec("skimage") is None:
        raise RuntimeError("the scene generator's background photos need scikit-image: "
                           "pip install -e '.[scenes]'")
    if args.model is None:
        from keyseg_core.weights.shipped import SHIPPED_DIR, SHIPPED_NAME

        if not (SHIPPED_DIR / "config.json").is_file():
            raise RuntimeError(f"the shipped {SHIPPED_NAME} model is not in {SHIPPED_DIR} (reinstall "
                               "keyseg), or name one with --model (config:tiny runs the pipeline with "
                               "random weights)")
    prefix, site = find_install(args.ros_install)
    stale = stale_modules(site)
    if stale:
        print(f"keyseg demo: warning: {', '.join(stale)} in {site / 'keyseg_ros'} differ from this "
              f"checkout's keyseg_ros/: the install space is older than the sources; rebuild with "
              f"`{BUILD_HINT}`",
              file=sys.stderr)
    return prefix, site


def ros_environment(prefix: Path, site: Path) -> dict[str, str]:
    """This environment plus what `source <prefix>/setup.bash` adds for keyseg_ros."""
    env = dict(os.environ)

    def prepend(name: str, value: str) -> None:
        parts = [p for p in env.get(name, "").split(os.pathsep) if p and p != value]
        env[name] = os.pathsep.join([value, *parts])

    prepend("PYTHONPATH", str(site))
    prepend("LD_LIBRARY_PATH", str(prefix / "lib"))  # the generated message libraries
    prepend("AMENT_PREFIX_PATH", str(sys.prefix))  # the ROS wheels' own index (a no-op on apt ROS)
    prepend("AMENT_PREFIX_PATH", str(prefix))
    return env


def parent_death_signal():
    """preexec_fn: the child gets SIGTERM if this process dies without stopping it (Linux). Also
    for the processes the ROS side starts (keyseg_ros/tools/demo/processes.py)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_ros_side(argv: list[str], env: dict[str, str]) -> int:
    """Run the demo process to its end, passing SIGTERM/SIGHUP on (Ctrl-C reaches it directly: same
    process group) and waiting while it stops what it started."""
    proc = subprocess.Popen(argv, env=env, preexec_fn=parent_death_signal())

    def forward(signum, frame) -> None:
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the demo got the same Ctrl-C (or gets it now) and is stopping
                forward(signal.SIGINT, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code  # killed by a signal: the shell's convention


def run(args: argparse.Namespace) -> int:
    problem = demo_options.argument_problem(args)
    if problem:
        raise ValueError(problem)
    prefix, site = check_prerequisites(args)
    argv = [sys.executable, "-m", "keyseg_ros.tools.demo", *demo_options.to_arguments(args)]
    return run_ros_side(argv, ros_environment(prefix, site))
