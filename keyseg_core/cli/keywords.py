"""`keyseg keywords`: build Reason-Seg-Key (a keyword per ReasonSeg training image) as a new data
root next to the input. No torch import here: the model loads only when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reasonseg", type=Path, required=True, help="input data root holding reason_seg/ReasonSeg (or that folder)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="new data root to write (keyword file + links to the input)"
    )
    parser.add_argument(
        "--extractor",
        default="google/flan-t5-xl",
        help="instruction model: hub id or local dir of a seq2seq (FLAN-T5) or causal chat model; "
        "'offline:smollm2-135m-instruct' needs no network (default: %(default)s)",
    )
    parser.add_argument(
        "--text",
        choices=("auto", "query", "outputs"),
        default="auto",
        help="text given to the model: the explanation (explanatory/train.json), the first query, "
        "or auto = explanation when present else query (default: %(default)s)",
    )
    parser.add_argument("--synonyms", type=Path, help="YAML/JSON map variant -> representative keyword")
    parser.add_argument("--overrides", type=Path, help="YAML/JSON map image stem -> keyword; wins over the model")
    parser.add_argument("--max-words", type=int, default=3, help="drop answers with more words (default: %(default)s)")
    parser.add_argument("--max-chars", type=int, default=40, help="drop longer answers (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per generate call (default: %(default)s)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="generation length (default: %(default)s)")
    parser.add_argument(
        "--save-every", type=int, default=32, help="save progress every N samples (default: %(default)s)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from <out>/keyword_progress.json")
    parser.add_argument("--overwrite", action="store_true", help="discard an earlier run in --out")
    parser.add_argument("--limit", type=int, help="process at most N new samples this run, then stop (resume later)")
    parser.add_argument(
        "--link",
        choices=("symlink", "copy", "none"),
        default="symlink",
        help="how the input's folders appear in --out (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu", help="torch device of the model (default: %(default)s)")
    parser.add_argument("--top", type=int, default=20, help="most frequent keywords to print (default: %(default)s)")
    parser.add_argument(
        "--skip-bad", action="store_true", help="skip unreadable samples (counted in the report) instead of failing"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from keyseg_core.keywords import KeywordBuildConfig, build_keywords

    config = KeywordBuildConfig(
        reasonseg=args.reasonseg,
        out=args.out,
        extractor=args.extractor,
        text=args.text,
        synonyms=args.synonyms,
        overrides=args.overrides,
        max_words=args.max_words,
        max_chars=args.max_chars,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        save_every=args.save_every,
        resume=args.resume,
        overwrite=args.overwrite,
        limit=args.limit,
        link=args.link,
        device=args.device,
        top=args.top,
        skip_bad=args.skip_bad,
    )
    report = build_keywords(config, progress=not args.no_progress)
    if report is None:
        print(f"stopped after --limit {args.limit}; progress saved in {args.out}; rerun with --resume", file=sys.stderr)
        return 0
    print(report.summary())
    print(f"wrote {args.out / 'reason_seg' / 'ReasonSeg' / 'explanatory_key' / 'keyword_outputs.json'}")
    return 0
