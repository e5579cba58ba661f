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
import re
import signal
import subprocess
import sys
from pathlib import Path

HELP = "run keyseg_node on a sequence of reasoning queries about generated scenes; print and save the scores"
REPO = Path(__file__).resolve().parents[2]  # the source checkout (keyseg_core is installed editable)
MAX_QUERIES = 24  # as keyseg_ros.tools.demo.main
BUILD_HINT = "bash scripts/build_ros.sh"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The same options as keyseg_ros/tools/demo/main.py's add_arguments (that module imports rclpy).
    parser.add_argument("--model", default=None,
                        help="keyseg_node's `model` parameter: checkpoint folder, hub id or config:<name> "
                             "(default: the shipped, trained KeySeg-Tiny)")
    parser.add_argument("--device", default="cpu", help="keyseg_node's `device`: cpu, cuda or cuda:N")
    parser.add_argument("--queries", type=int, default=6, metavar="N",
                        help=f"queries to ask, one scene each, query types in turn (default: 6, at most "
                             f"{MAX_QUERIES})")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second (default: 10)")
    parser.add_argument("--hold", type=int, default=3, metavar="N",
                        help="answered frames to collect per query before the next (default: 3)")
    parser.add_argument("--out", default="out/demo",
                        help="output folder: overlays, contact sheet, summary, logs (default: out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="scene generator seed (default: 0)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="longest wait for each step: the node's start-up (model load included) "
                             "and each query's answers (default: 120)")
    parser.add_argument("--namespace", default="/keyseg",
                        help="namespace of keyseg_node; the camera is <namespace>/image (default: /keyseg)")
    parser.add_argument("--ros-install", default=None, metavar="DIR",
                        help="install space holding the built keyseg_ros package (default: the sourced "
                             "workspace's, else install/ of this checkout)")


def _check_arguments(args: argparse.Namespace) -> None:
    if not 1 <= args.queries <= MAX_QUERIES:
        raise ValueError(f"--queries must be between 1 and {MAX_QUERIES}, got {args.queries}")
    if not args.rate > 0:
        raise ValueError(f"--rate must be > 0, got {args.rate:g}")
    if args.hold < 1:
        raise ValueError(f"--hold must be >= 1, got {args.hold}")
    if not args.timeout > 0:
        raise ValueError(f"--timeout must be > 0, got {args.timeout:g}")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_/]*", args.namespace) or "//" in args.namespace:
        raise ValueError(f"--namespace must be a ROS namespace such as /keyseg, got {args.namespace!r}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} exists and is not a folder")


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
    """keyseg_ros modules of this checkout that differ from the installed ones (an old build)."""
    source = REPO / "keyseg_ros"
    if not source.is_dir():
        return []
    stale = []
    for module in sorted(source.glob("*.py")):
        installed = site / "keyseg_ros" / module.name
        if not installed.is_file() or installed.read_bytes() != module.read_bytes():
            stale.append(module.name)
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


def _parent_death_signal():
    """preexec_fn: the demo process gets SIGTERM if this one dies without stopping it (Linux)."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_ros_side(argv: list[str], env: dict[str, str]) -> int:
    """Run the demo process to its end, passing SIGTERM/SIGHUP on (Ctrl-C reaches it directly: same
    process group) and waiting while it stops what it started."""
    proc = subprocess.Popen(argv, env=env, preexec_fn=_parent_death_signal())

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
    _check_arguments(args)
    prefix, site = check_prerequisites(args)
    argv = [sys.executable, "-m", "keyseg_ros.tools.demo",
            "--device", args.device, "--queries", str(args.queries), "--rate", f"{args.rate:g}",
            "--hold", str(args.hold), "--out", str(args.out), "--seed", str(args.seed),
            "--timeout", f"{args.timeout:g}", "--namespace", args.namespace]
    if args.model is not None:
        argv += ["--model", args.model]
    return run_ros_side(argv, ros_environment(prefix, site))
