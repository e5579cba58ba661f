"""`keyseg prepare-offline`: convert the offline SmolLM2 GGUF into the keyseg cache once (~20 s)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "Cache location: $KEYSEG_CACHE, else $XDG_CACHE_HOME/keyseg, else ~/.cache/keyseg."


def run(args: argparse.Namespace) -> int:
    from keyseg_core.pretrained.offline_llm import smollm2_dir

    print(f"offline LLM ready at {smollm2_dir()}")
    return 0
