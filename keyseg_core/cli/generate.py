"""`keyseg generate`: synthetic reasoning-segmentation scenes (OpenMoji glyphs on photos and textures)
in the ReasonSeg / Reason-Seg-Key layout, readable by `keyseg train` and `keyseg eval` unchanged."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

HELP = "generate synthetic reasoning-segmentation scenes (OpenMoji on photos/textures) as ReasonSeg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", required=True, choices=("train", "val", "test"), help="split to write")
    parser.add_argument("--n", type=int, required=True, help="number of images")
    parser.add_argument(
        "--seed", type=int, default=0, help="run seed; sample i uses (seed, split, i) (default: %(default)s)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="data root to write (reason_seg/ReasonSeg/... under it)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace this split if --out already holds it")
    parser.add_argument("--size", default="320x240", help="image size WxH (default: %(default)s)")
    parser.add_argument("--objects", default="3-6", help="objects per image, MIN-MAX (default: %(default)s)")
    parser.add_argument("--categories", help="comma-separated categories to use (default: all)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: %(default)s)")
    parser.add_argument(
        "--contact", type=int, default=24, help="samples on the contact sheet, 0 = none (default: %(default)s)"
    )


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"--size must look like 320x240, got {text!r}")
    width, height = int(m.group(1)), int(m.group(2))
    if not (96 <= width <= 4096 and 96 <= height <= 4096):
        raise ValueError(f"--size {width}x{height}: each side must be between 96 and 4096 pixels")
    return width, height


def parse_objects(text: str, max_objects: int) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise ValueError(f"--objects must look like 3-6 (or 4), got {text!r}")
    low = int(m.group(1))
    high = int(m.group(2)) if m.group(2) else low
    if not 1 <= low <= high <= max_objects:
        raise ValueError(f"--objects {text}: need 1 <= MIN <= MAX <= {max_objects}")
    return low, high


def parse_categories(text: str | None, known: list[str]) -> tuple[str, ...] | None:
    if text is None:
        return None
    chosen = [c.strip().lower() for c in text.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in known]
    if unknown:
        noun = "category" if len(unknown) == 1 else "categories"
        raise ValueError(f"unknown {noun} {', '.join(map(repr, unknown))}; valid: {', '.join(known)}")
    if not chosen:
        raise ValueError("--categories is empty")
    return tuple(dict.fromkeys(chosen))


def run(args: argparse.Namespace) -> int:
    from keyseg_core.scenes.compose import MAX_OBJECTS
    from keyseg_core.scenes.generator import SceneConfig
    from keyseg_core.scenes.knowledge import load_knowledge
    from keyseg_core.scenes.writer import generate_split, split_paths

    if args.n <= 0:
        raise ValueError(f"--n must be > 0, got {args.n}")
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    width, height = parse_size(args.size)
    low, high = parse_objects(args.objects, MAX_OBJECTS)
    kb = load_knowledge()
    categories = parse_categories(args.categories, list(kb.categories))
    if categories is not None and len(categories) < low:
        raise ValueError(
            f"--categories gives {len(categories)} categories but --objects asks for at least {low} distinct ones"
        )
    config = SceneConfig(width=width, height=height, min_objects=low, max_objects=high, categories=categories)

    def progress(done: int) -> None:
        if sys.stderr.isatty():
            print(f"\r{done}/{args.n}", end="", file=sys.stderr, flush=True)

    result = generate_split(
        args.out,
        args.split,
        args.n,
        args.seed,
        config,
        workers=args.workers,
        overwrite=args.overwrite,
        contact=args.contact,
        progress=progress,
    )
    if sys.stderr.isatty():
        print(file=sys.stderr)
    paths = split_paths(args.out, args.split)
    rate = args.n / max(result["elapsed_s"], 1e-9)
    print(f"wrote {args.n} {args.split} images to {paths['images']}")
    print(f"  masks: {paths['masks']}  keywords: {paths['keywords']}  manifest: {paths['manifest']}")
    if args.contact:
        print(f"  contact sheet: {paths['contact']}")
    print("  query types (text[0]): " + ", ".join(f"{k} {v}" for k, v in result["query_type_counts"].items()))
    print(f"  {result['elapsed_s']:.2f} s, {rate:.1f} images/s with {args.workers} worker(s)")
    return 0
