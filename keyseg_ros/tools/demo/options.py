"""The ROS side's command line: the options `keyseg demo` takes too (defined once, ROS-free, in
keyseg_core.cli.demo_options) and --attach, which only the ROS side has (demo.launch.py starts the
node itself)."""

from __future__ import annotations

import argparse

from keyseg_core.cli.demo_options import add_arguments, argument_problem

DESCRIPTION = ("`keyseg demo` / `ros2 run keyseg_ros demo`: keyseg_node answers a sequence of reasoning "
               "queries about generated scenes, end to end over ROS 2, and the answers are scored.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keyseg_ros demo", description=DESCRIPTION)
    add_arguments(parser)
    parser.add_argument("--attach", action="store_true",
                        help="drive a keyseg_node already running in --namespace instead of starting "
                             "one (demo.launch.py starts the node itself)")
    return parser


def parse(argv: list[str]) -> argparse.Namespace:
    """The options in `argv` (no program name, no ROS arguments); a bad one exits 2 with the reason."""
    parser = build_parser()
    opts = parser.parse_args(argv)
    problem = argument_problem(opts)
    if problem:
        parser.error(problem)
    return opts
