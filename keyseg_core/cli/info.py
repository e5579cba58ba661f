"""`keyseg info`: parameter summary (trainable / total per part) and the resolved config."""

from __future__ import annotations

import argparse
import json

from keyseg_core.cli.predict import add_model_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--config-json", action="store_true", help="also print the full config as JSON")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.runtime.predictor import Predictor

    predictor = Predictor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    model = predictor.model
    print(f"model: {predictor.model_name}  ({model.config.name}{', UNTRAINED weights' if predictor.untrained else ''})")
    print(f"fusion: {model.config.fusion}")
    print(f"{'part':<20}{'trainable':>14}{'total':>16}")
    for part, trainable, total in model.parameter_summary():
        print(f"{part:<20}{trainable:>14,}{total:>16,}")
    if args.config_json:
        print(json.dumps(model.config.to_dict(), indent=2, sort_keys=True))
    return 0
