"""The live demo's options, defined once for both of its entry points.

`keyseg demo` (keyseg_core/cli/demo.py) declares them, checks them and passes them on to the ROS
side, `python -m keyseg_ros.tools.demo` (keyseg_ros/tools/demo/options.py), which declares the
same ones and adds its own. ROS-free: keyseg_core never imports ROS.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

MAX_QUERIES = 24


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options both entry points take."""
    parser.add_argument("--model", default=None,
                        help="keyseg_node's `model` parameter: checkpoint folder, hub id or "
                             "config:<name> (default: the shipped, trained KeySeg-Tiny)")
    parser.add_argument("--device", default="cpu", help="keyseg_node's `device`: cpu, cuda or cuda:N")
    parser.add_argument("--queries", type=int, default=6, metavar="N",
                        help=f"queries to ask, one scene each, query types in turn (default: 6, at most "
                             f"{MAX_QUERIES})")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second (default: 10)")
    parser.add_argument("--hold", type=int, default=3, metavar="N",
                        help="answered frames to collect per query before the next (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"),
                        help="output folder: overlays, contact sheet, summary, logs (default: out/demo)")
    parser.add_argument("--seed", type=int, default=0, help="scene generator seed (default: 0)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="longest wait for each step: the node's start-up (model load included) "
                             "and each query's answers (default: 120)")
    parser.add_argument("--namespace", default="/keyseg",
                        help="namespace of keyseg_node; the camera is <namespace>/image "
                             "(default: /keyseg, which config/keyseg.rviz shows)")


def argument_problem(opts: argparse.Namespace) -> str | None:
    """Why the options cannot work, or None."""
    if not 1 <= opts.queries <= MAX_QUERIES:
        return f"--queries must be between 1 and {MAX_QUERIES}, got {opts.queries}"
    if not opts.rate > 0:
        return f"--rate must be > 0, got {opts.rate:g}"
    if opts.hold < 1:
        return f"--hold must be >= 1, got {opts.hold}"
    if not opts.timeout > 0:
        return f"--timeout must be > 0, got {opts.timeout:g}"
    if opts.seed < 0:
        return f"--seed must be >= 0, got {opts.seed}"
    if not re.fullmatch(r"/?[A-Za-z_][A-Za-z0-9_/]*", opts.namespace) or "//" in opts.namespace:
        return f"--namespace must be a ROS namespace such as /keyseg, got {opts.namespace!r}"
    if opts.out.exists() and not opts.out.is_dir():
        return f"--out {opts.out} exists and is not a folder"
    return None


def to_arguments(opts: argparse.Namespace) -> list[str]:
    """The options as a command line again, to pass them on to the other entry point."""
    args = ["--device", opts.device, "--queries", str(opts.queries), "--rate", f"{opts.rate:g}",
            "--hold", str(opts.hold), "--out", str(opts.out), "--seed", str(opts.seed),
            "--timeout", f"{opts.timeout:g}", "--namespace", opts.namespace]
    if opts.model is not None:
        args += ["--model", opts.model]
    return args
