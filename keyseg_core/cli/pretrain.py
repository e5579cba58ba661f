"""`keyseg pretrain --config FILE`: stage 1 for a model without pretrained bases (KeySeg-Tiny)."""

from __future__ import annotations

import argparse

HELP = "stage 1: pretrain a small model's vision tower and SAM on generated scenes (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="stage-1 config (YAML; e.g. recipes/keyseg_tiny_bases.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_steps=100 (repeatable; values are YAML)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="end after this step as if interrupted (the schedule still spans max_steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--device", default=None, help="override the config's device: cpu, cuda or cuda:N")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="fit max_steps into this many seconds of training, measured after the first steps "
                             "(the fitted value is printed and saved in bases_config.json)")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.train.stage1.config import BasesConfig

    overrides = args.overrides + ([f"device={args.device}"] if args.device else [])
    config = BasesConfig.from_file(args.config, overrides)
    if args.time_budget is not None and args.time_budget <= 0:
        raise ValueError(f"--time-budget: {args.time_budget} must be > 0 seconds")
    if args.stop_at is not None and args.stop_at < 1:
        raise ValueError(f"--stop-at: {args.stop_at} must be >= 1")
    from keyseg_core.train.stage1.loop import pretrain_bases

    summary = pretrain_bases(config, resume=args.resume, stop_at=args.stop_at, progress=not args.no_progress,
                             time_budget=args.time_budget)
    where = f"; stage 2 starts from it with init_checkpoint: {summary['final']}" if summary["final"] else ""
    print(f"done: step {summary['step']}/{summary['max_steps']} in {config.output_dir}{where}")
    return 0
