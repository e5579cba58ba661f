"""`python -m keyseg_core.speech.recognizer_bench`: word error rate and keyword recall of spoken queries.

Each query below is spoken by espeak-ng (a synthetic US-English voice), read back through the same
checks and resampling as real input, and recognised twice: with pocketsphinx's general English
language model, and biased toward the query vocabulary. It prints a table and can write JSON
with every transcript.

Word error rate: (substitutions + deletions + insertions) / reference words, over all queries.
Keyword recall: of the keywords (the vocabulary's keyword list) said in the queries, the share
that appear in the transcript. "In-vocabulary" queries are sentences the biasing corpus contains;
the others use phrasings it does not, which is the honest test of biasing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keyseg_core.atomic import save_report
from keyseg_core.speech.audio import check_speech, read_wav
from keyseg_core.speech.recognizer import ENGINES, RecognizerUnavailable, make_recognizer
from keyseg_core.speech.vocabulary import QueryVocabulary, normalize

QUERIES = (
    "which object in this room is used for sleeping",
    "the cup I can drink from",
    "where is the remote",
    "find the laptop on the table",
    "segment the dog",
    "show me something I can cut paper with",
    "which object can I sit on",
    "pick up the apple",
    "the bottle next to the sink",
    "what can I use to tell the time",
    "find the book on the chair",
    "where is the teddy bear",
    "the knife on the dining table",
    "which object keeps food cold",
    "point to the cell phone",
    "segment the person on the bicycle",
    "the umbrella by the door",
    "which object is used for brushing teeth",
    "find the pizza",
    "where did I leave my keyboard",
    "the banana in the bowl",
    "which animal can I ride",
    "something to heat food",
    "the clock on the wall",
)


def word_errors(reference: str, hypothesis: str) -> int:
    """Word-level Levenshtein distance."""
    ref, hyp = reference.split(), hypothesis.split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def synthesise(texts: list[str], folder: Path, voice: str, speed: int) -> list[Path]:
    """One WAV per text, spoken by espeak-ng (22.05 kHz: the reader resamples it)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RecognizerUnavailable("espeak-ng is not installed (Debian/Ubuntu: apt-get install espeak-ng)")
    paths = []
    for i, text in enumerate(texts):
        path = folder / f"query_{i:02d}.wav"
        subprocess.run([espeak, "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                       capture_output=True, timeout=60)
        paths.append(path)
    return paths


def evaluate(recognizer, wavs: list[Path], references: list[str], vocabulary: QueryVocabulary) -> dict:
    corpus = set(vocabulary.corpus())
    rows, errors, words, kw_said, kw_heard, seconds = [], 0, 0, 0, 0, 0.0
    split = {True: [0, 0], False: [0, 0]}  # in corpus -> [errors, words]
    for wav, reference in zip(wavs, references):
        audio = read_wav(wav)
        check_speech(audio)
        transcript = recognizer.transcribe(audio.pcm16())
        ref = normalize(reference)
        e, n = word_errors(ref, transcript.text), len(ref.split())
        said = vocabulary.keywords_in(ref)
        heard = [k for k in said if k in vocabulary.keywords_in(transcript.text)]
        in_corpus = ref in corpus
        errors, words = errors + e, words + n
        split[in_corpus][0] += e
        split[in_corpus][1] += n
        kw_said, kw_heard, seconds = kw_said + len(said), kw_heard + len(heard), seconds + transcript.seconds
        rows.append({"reference": ref, "transcript": transcript.text, "word_errors": e, "words": n,
                     "keywords": said, "keywords_heard": heard, "in_vocabulary": in_corpus,
                     "confidence": transcript.confidence, "seconds": transcript.seconds})
    return {
        "engine": recognizer.engine,
        "wer": errors / words if words else 0.0,
        "wer_in_vocabulary": split[True][0] / split[True][1] if split[True][1] else None,
        "wer_other_phrasings": split[False][0] / split[False][1] if split[False][1] else None,
        "sentence_accuracy": sum(r["word_errors"] == 0 for r in rows) / len(rows) if rows else 0.0,
        "keyword_recall": kw_heard / kw_said if kw_said else None,
        "keywords_said": kw_said,
        "seconds_per_query": seconds / len(rows) if rows else 0.0,
        "queries": rows,
    }


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def table(results: dict[str, dict], n_queries: int, n_in_vocab: int) -> str:
    head = ("| mode | WER | WER in-vocabulary phrasings | WER other phrasings | sentences exact | "
            "keyword recall | s/query |")
    lines = [f"{n_queries} spoken queries ({n_in_vocab} with phrasings in the biasing corpus)",
             head, "|" + "---|" * 7]
    for mode, r in results.items():
        lines.append(f"| {mode} | {_pct(r['wer'])} | {_pct(r['wer_in_vocabulary'])} | "
                     f"{_pct(r['wer_other_phrasings'])} | {_pct(r['sentence_accuracy'])} | "
                     f"{_pct(r['keyword_recall'])} ({r['keywords_said']} keywords) | "
                     f"{r['seconds_per_query']:.2f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m keyseg_core.speech.recognizer_bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", choices=ENGINES, default="pocketsphinx")
    parser.add_argument("--whisper-model", help="local faster-whisper model folder (engine faster-whisper)")
    parser.add_argument("--vocabulary", type=Path,
                        help="query vocabulary file (YAML/JSON phrases+keywords, or one phrase a line)")
    parser.add_argument("--voice", default="en-us", help="espeak-ng voice (default: en-us)")
    parser.add_argument("--speed", type=int, default=150, help="espeak-ng words per minute (default: 150)")
    parser.add_argument("--limit", type=int, help="only the first N queries")
    parser.add_argument("--verbose", action="store_true", help="print every transcript")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    return parser


def main(args: list[str] | None = None) -> int:
    opts = build_parser().parse_args(args)
    vocabulary = QueryVocabulary.from_file(opts.vocabulary) if opts.vocabulary else QueryVocabulary.default()
    queries = list(QUERIES[: opts.limit] if opts.limit else QUERIES)
    results = {}
    try:
        with tempfile.TemporaryDirectory(prefix="keyseg_speech_bench_") as tmp:
            wavs = synthesise(queries, Path(tmp), opts.voice, opts.speed)
            for mode, bias in (("general", False), ("biased", True)):
                start = time.perf_counter()
                recognizer = make_recognizer(opts.engine, vocabulary=vocabulary, bias=bias,
                                             whisper_model=opts.whisper_model)
                setup = time.perf_counter() - start
                results[mode] = evaluate(recognizer, wavs, queries, vocabulary)
                results[mode]["setup_seconds"] = setup
    except RecognizerUnavailable as exc:
        print(f"speech bench: error: {exc}", file=sys.stderr)
        return 2
    corpus = set(vocabulary.corpus())
    n_in = sum(normalize(q) in corpus for q in queries)
    print(table(results, len(queries), n_in))
    if opts.verbose:
        for mode, r in results.items():
            print(f"\n{mode}:")
            for row in r["queries"]:
                print(f"  {row['reference']!r:50} -> {row['transcript']!r}")
    if opts.json:
        save_report(opts.json, {"voice": opts.voice, "speed_wpm": opts.speed, "engine": opts.engine,
                                "queries": len(queries), "in_vocabulary_queries": n_in, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
