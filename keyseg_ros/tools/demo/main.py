"""`keyseg demo` / `ros2 run keyseg_ros demo`: keyseg_node answers a sequence of reasoning queries
about generated scenes, end to end over ROS 2, and the answers are scored.

What runs, each as its own process, as on a robot:
  keyseg_node    the lifecycle node (`python -m keyseg_ros.node`), --model as its `model` parameter
                 (empty: keyseg_core's default, the shipped KeySeg-Tiny); not started with --attach
  image_player   one per scene, playing it as a camera on <namespace>/image; its frame_id names the
                 scene
  query          one process fed one query per line on stdin, as a voice or text front end would
  this process   a small rclpy node that collects `result`, `mask` and `keyword` and scores them

Scenes come from keyseg_core.scenes' test split (held-out backgrounds and phrasings): one query type
after another (use, property, spatial, kind, size, name, ...), each with the scene's exact target
mask and keyword. A query is held until the node has answered --hold frames of its scene. A result
belongs to a query when its `query` field and its header's frame_id (the scene) both match, so a
frame answered for the previous query or scene never counts.

Writes into --out: scenes/qNN.jpg (what the camera plays), qNN_<type>_overlay.png (published mask
tinted, the true target outlined in green), contact_sheet.png, summary.json, summary.csv and
logs/ (each process's output); prints the table. Exit code 0 when every query was answered and every
process stopped cleanly; 1 when something failed (the message says what: model load, node start,
discovery, a tool, a query without an answer); 2 for bad arguments; 128 + signal number on Ctrl-C
or SIGTERM. Every process it started is stopped before it exits.

This module runs it from start to clean-up: the output folder, the collecting node, the processes,
the session's steps, and then, whatever happened, every process stopped in order before the report.
The parts: options.py (command line), scenes.py, processes.py (the processes it starts),
collector.py (the collecting node), session.py (the steps: start, wait, warm up, ask), scoring.py
and report.py (outputs and table).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from rclpy.utilities import remove_ros_args

from keyseg_ros.tools.common import SpinThread, topic_prefix, use_shipped_profile
from keyseg_ros.tools.demo.collector import Collector
from keyseg_ros.tools.demo.options import parse
from keyseg_ros.tools.demo.processes import Processes
from keyseg_ros.tools.demo.report import clear_previous, print_results, summarise, write_outputs
from keyseg_ros.tools.demo.scenes import SCENE_SIZE, SPLIT, Item, make_items
from keyseg_ros.tools.demo.scoring import score
from keyseg_ros.tools.demo.session import Demo, DemoError, Interrupted, StopFlag


def run(opts: argparse.Namespace, ros_args: list[str] | None = None) -> int:
    """The demo; SIGINT/SIGTERM/SIGHUP (from the moment it starts) stop every process it started and
    make the exit code 128 + the signal number."""
    with StopFlag() as stop:
        code = _run(opts, ros_args, stop)
        if code == 0 and stop.received is not None:  # arrived while the outputs were written
            print(f"keyseg demo: interrupted ({signal.Signals(stop.received).name}) after every process "
                  "had stopped", file=sys.stderr)
            return 128 + stop.received
        return code


def _run(opts: argparse.Namespace, ros_args: list[str] | None, stop: StopFlag) -> int:
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    start = time.monotonic()
    out: Path = opts.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        clear_previous(out)
        (out / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        print(f"keyseg demo: error: cannot write the output folder {out}: {exc}", file=sys.stderr)
        return 1
    use_shipped_profile(index_required=False, file_required=True)
    ns = topic_prefix(opts.namespace)
    print(f"keyseg demo: {opts.queries} reasoning queries about generated scenes ({SPLIT} split: held-out "
          f"backgrounds and phrasings, seed {opts.seed}), camera {opts.rate:g} Hz at "
          f"{SCENE_SIZE[0]}x{SCENE_SIZE[1]}, namespace {ns}", flush=True)
    procs = Processes(out / "logs")
    ros_node = spinner = demo = None
    items: list[Item] = []
    code, failure = 0, None

    def interrupted(signum: int, when: str) -> str:
        return f"interrupted ({signal.Signals(signum).name}){when}: stopping every process the demo started"

    try:
        stop.check()
        rclpy.init(args=ros_args, signal_handler_options=SignalHandlerOptions.NO)
        ros_node = rclpy.create_node(f"keyseg_demo_{os.getpid()}")
        collector = Collector(ros_node, ns)
        spinner = SpinThread(ros_node, "keyseg_demo_spin")
        demo = Demo(opts, ros_node, collector, procs, stop)
        stop.check()
        demo.start_processes()
        t_scenes = time.monotonic()
        try:
            items = make_items(opts.queries, opts.seed, out / "scenes", stop.check)
        except (RuntimeError, ValueError, OSError) as exc:
            raise DemoError(f"cannot make the demo's scenes: {exc}") from exc
        print(f"scenes: {len(items)} generated in {time.monotonic() - t_scenes:.1f} s "
              f"({out / 'scenes'})", flush=True)
        demo.wait_ready(start)
        demo.warm_up(items[0])
        for item in items:
            demo.ask(item)
        stop.check()
    except Interrupted as exc:
        code, failure = 128 + exc.signum, interrupted(exc.signum, "")
    except DemoError as exc:
        code, failure = 1, str(exc)
    finally:
        # From here on a signal is only noted: the clean-up must finish.
        if failure:
            print(f"keyseg demo: {failure}", file=sys.stderr, flush=True)
        procs.stop_all()
        if spinner is not None:
            spinner.stop()
        if ros_node is not None:
            ros_node.destroy_node()
        rclpy.try_shutdown()
    if not code and stop.received is not None:  # arrived during the clean-up: still an interruption
        code = 128 + stop.received
        print(f"keyseg demo: {interrupted(stop.received, ' while it stopped its processes')}",
              file=sys.stderr, flush=True)
    if code:
        started = ", ".join(f"{p['name']} pid {p['pid']}" for p in procs.report())
        print(f"keyseg demo: stopped the {len(procs.started)} process(es) it had started"
              + (f" ({started})" if started else "") + f"; logs in {out / 'logs'}", file=sys.stderr)
        return code
    unclean = [p for p in procs.report() if p["exit_code"] != 0]
    rows = [score(item, demo.collector) for item in items]
    summary = summarise(opts, ns, rows, model=demo.model, untrained=demo.untrained,
                        topics=demo.collector.counts(), timings=demo.timings,
                        wall_s=time.monotonic() - start, processes=procs.report())
    paths = write_outputs(out, items, rows, summary)
    print_results(rows, summary, paths)
    if unclean:
        names = ", ".join(f"{p['name']} (exit code {p['exit_code']})" for p in unclean)
        print(f"keyseg demo: not every process stopped cleanly: {names}; logs in {out / 'logs'}",
              file=sys.stderr)
        return 1
    return 0


def main(args: list[str] | None = None) -> int:
    """`args` as sys.argv (program name first, ROS arguments allowed)."""
    ros_args = sys.argv if args is None else args
    return run(parse(remove_ros_args(ros_args)[1:]), ros_args)


if __name__ == "__main__":
    sys.exit(main())
