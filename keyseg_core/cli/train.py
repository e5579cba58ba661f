"""`keyseg train --config FILE`: train KeySeg (one process, or many under torchrun / accelerate launch)."""

from __future__ import annotations

import argparse
import json
import os

HELP = "train a KeySeg model from a YAML config (resumable; DDP/DeepSpeed/FSDP via accelerate)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config (YAML/JSON; see recipes/ and docs/training.md)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_steps=100 --set model_overrides.fusion.preset=seg_only "
                             "(repeatable; values are YAML)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in output_dir (weights, optimizer, schedule, RNG, data position)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable records (counted and reported) instead of stopping at the first")
    parser.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                        help="end after this step as if interrupted (the schedule still spans max_steps)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--dry-run", action="store_true", help="validate the config, print it resolved, and exit")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.train.stage2.config import TrainConfig

    config = TrainConfig.from_file(args.config, args.overrides)
    if args.skip_bad:
        config.skip_bad = True
    if args.stop_at is not None and args.stop_at < 1:
        raise ValueError(f"--stop-at: {args.stop_at} must be >= 1")
    if args.dry_run:
        print(config.to_json(), end="")
        print(json.dumps(config.model_config().to_dict(), indent=2, sort_keys=True))
        return 0
    from keyseg_core.train.stage2.loop import train

    summary = train(config, resume=args.resume, stop_at=args.stop_at, progress=not args.no_progress)
    if os.environ.get("RANK", "0") != "0":  # one report per job, from the main process
        return 0
    if summary["skipped"]:
        print(f"skipped records: {summary['skipped']}")
    print(f"done: step {summary['step']}/{summary['max_steps']} in {config.output_dir}")
    return 0
