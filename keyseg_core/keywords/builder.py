"""Build Reason-Seg-Key: a keyword for every ReasonSeg training image (paper sec. 4.2).

Steps: read the train split (JSON only), ask the extractor per sample, normalise, apply manual
overrides, write `<out>/reason_seg/ReasonSeg/explanatory_key/keyword_outputs.json`. The input is
never modified; the output root links (or copies) the input's folders so it is a complete data
root for `open_dataset("reasonseg", out, ...)`.

Resumability: raw model answers are saved atomically to `<out>/keyword_progress.json` every
`save_every` samples, at batch boundaries, so a resumed run feeds the model exactly the same
batches and produces the same file. Normalisation and overrides are re-applied from the saved raw
answers at the end of every run, so changing the synonym or override file never needs the model.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from keyseg_core.atomic import atomic_write_json
from keyseg_core.data.errors import DatasetError
from keyseg_core.data.io import read_json
from keyseg_core.data.keyword_file import KEYWORD_FILE, KeywordEntry, write_keyword_file
from keyseg_core.data.reasonseg import ReasonSegDataset
from keyseg_core.keywords.extractor import PROMPT, parse_answer
from keyseg_core.keywords.normalize import NormalizeConfig, clean, load_mapping, load_synonyms, normalize

PROGRESS_FILE = "keyword_progress.json"
REPORT_FILE = "keyword_report.json"


@dataclass
class KeywordBuildConfig:
    reasonseg: Path  # input data root (holding reason_seg/ReasonSeg) or the ReasonSeg folder
    out: Path  # new data root to create
    extractor: str = "google/flan-t5-xl"
    text: Literal["auto", "query", "outputs"] = "auto"  # auto: explanation if present, else text[0]
    synonyms: Path | None = None
    overrides: Path | None = None
    max_words: int = 3
    max_chars: int = 40
    batch_size: int = 8
    max_new_tokens: int = 16
    save_every: int = 32
    resume: bool = False
    overwrite: bool = False
    limit: int | None = None  # stop after this many new samples (whole batches); resume later
    link: Literal["symlink", "copy", "none"] = "symlink"
    device: str = "cpu"
    top: int = 20
    skip_bad: bool = False

    def __post_init__(self) -> None:
        self.reasonseg, self.out = Path(self.reasonseg), Path(self.out)
        for key in ("batch_size", "max_new_tokens", "save_every", "top"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        if self.text not in ("auto", "query", "outputs"):
            raise ValueError(f"text must be auto, query or outputs, got '{self.text}'")
        if self.link not in ("symlink", "copy", "none"):
            raise ValueError(f"link must be symlink, copy or none, got '{self.link}'")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")
        NormalizeConfig(self.max_words, self.max_chars)  # validates those two keys

    def fingerprint(self) -> dict:
        """What must match for saved raw answers to be reused."""
        return {
            "extractor": self.extractor,
            "prompt": PROMPT,
            "text": self.text,
            "max_new_tokens": self.max_new_tokens,
            "batch_size": self.batch_size,
        }


@dataclass(frozen=True)
class _Sample:
    stem: str
    image: str
    query: str
    outputs: str
    source_text: str


@dataclass
class KeywordReport:
    samples: int = 0
    written: int = 0
    distinct: int = 0
    from_model: int = 0
    overridden: int = 0
    changed: int = 0  # final keyword differs from the model's (lowercased) answer
    synonyms: int = 0
    dropped: Counter = field(default_factory=Counter)
    dropped_samples: list[dict] = field(default_factory=list)  # stem, answer, reason: to fill overrides
    top: list[tuple[str, int]] = field(default_factory=list)
    skipped: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [
            f"samples: {self.samples}; keywords written: {self.written} ({self.distinct} distinct)",
            f"from model: {self.from_model}; overridden by hand: {self.overridden}",
            f"changed by normalisation: {self.changed} (synonym map: {self.synonyms})",
            f"dropped: {sum(self.dropped.values())}" + "".join(f"; {r}: {n}" for r, n in self.dropped.most_common()),
        ]
        if self.dropped_samples:
            lines.append("samples without keyword (add them to the override file):")
            lines.extend(f"  {d['stem']}: {d['reason']} ({d['answer']!r})" for d in self.dropped_samples[:20])
        if self.skipped:
            lines.append(f"unreadable samples skipped: {self.skipped}")
        lines.append("most frequent keywords: " + ", ".join(f"{k} ({n})" for k, n in self.top))
        return "\n".join(lines)


def _samples(ds: ReasonSegDataset, text_mode: str) -> list[_Sample]:
    samples = []
    for i, record in enumerate(ds.records):
        first = ds.annotation(i).queries[0]
        query, outputs = ds.explanatory.get(record.stem, ("", ""))
        if text_mode == "outputs" and not outputs:
            raise DatasetError(
                ds.dir / "explanatory" / "train.json",
                record.stem,
                "no_explanation",
                "text='outputs' but this sample has no explanation",
            )
        source = outputs if text_mode == "outputs" or (text_mode == "auto" and outputs) else first
        samples.append(_Sample(record.stem, record.image_path.name, query or first, outputs, source))
    return samples


def _prepare_output(config: KeywordBuildConfig, input_dir: Path) -> Path:
    """Create the output data root; refuse to write into the input or over an earlier run."""
    out_dir = config.out / "reason_seg" / "ReasonSeg"
    if out_dir.resolve() == input_dir.resolve() or input_dir.resolve() in config.out.resolve().parents:
        raise ValueError(f"--out {config.out} is inside the input data set {input_dir}; the input is never modified")
    existing = [p for p in (config.out / PROGRESS_FILE, out_dir / KEYWORD_FILE) if p.exists()]
    if existing and not (config.resume or config.overwrite):
        raise ValueError(f"{existing[0]} exists; pass --resume to continue it or --overwrite to start over")
    if config.overwrite:
        for path in existing:
            path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.link != "none":
        for child in sorted(input_dir.iterdir()):
            target = out_dir / child.name
            if child.name == KEYWORD_FILE.parts[0] or target.exists() or target.is_symlink():
                continue
            if config.link == "symlink":
                target.symlink_to(child.resolve(), target_is_directory=child.is_dir())
            elif child.is_dir():
                shutil.copytree(child, target)
            else:
                shutil.copy2(child, target)
    return out_dir


def _load_progress(config: KeywordBuildConfig) -> dict[str, str]:
    path = config.out / PROGRESS_FILE
    if not config.resume or not path.is_file():
        return {}
    data = read_json(path)
    if data.get("fingerprint") != config.fingerprint():
        raise ValueError(
            f"{path} was made with different settings {data.get('fingerprint')}; use --overwrite to start over"
        )
    return dict(data.get("raw", {}))


def _save_progress(config: KeywordBuildConfig, raw: dict[str, str]) -> None:
    atomic_write_json(
        config.out / PROGRESS_FILE, {"fingerprint": config.fingerprint(), "raw": dict(sorted(raw.items()))}
    )


def _load_overrides(config: KeywordBuildConfig, stems: set[str]) -> dict[str, str]:
    if config.overrides is None:
        return {}
    overrides = {}
    for key, value in load_mapping(config.overrides, "override").items():
        stem = Path(key).stem if key.lower().endswith((".jpg", ".json")) else key
        if stem not in stems:
            raise ValueError(f"{config.overrides}: override entry '{key}' names no training sample")
        keyword = clean(value)
        if not keyword:
            raise ValueError(f"{config.overrides}: override entry '{key}' is empty after cleaning")
        overrides[stem] = keyword
    return overrides


def build_keywords(
    config: KeywordBuildConfig,
    extractor: Callable[[list[str]], list[str]] | None = None,
    progress: bool = True,
) -> KeywordReport | None:
    """Run (or continue) the build. Returns the report, or None when `limit` stopped it early.

    extractor: maps texts to raw answers; built from `config.extractor` when not given.
    """
    from tqdm import tqdm

    ds = ReasonSegDataset(config.reasonseg, "train", keywords=False, skip_bad=config.skip_bad)
    samples = _samples(ds, config.text)
    overrides = _load_overrides(config, {s.stem for s in samples})
    norm = NormalizeConfig(
        config.max_words, config.max_chars, load_synonyms(config.synonyms) if config.synonyms else {}
    )
    out_dir = _prepare_output(config, ds.dir)
    raw = _load_progress(config)

    # fixed batches over the sample order: a resumed run regenerates the same batches
    todo = [s for s in samples if s.stem not in overrides]
    batches = [todo[i : i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
    pending = [b for b in batches if not all(s.stem in raw for s in b)]
    if pending and extractor is None:
        from keyseg_core.keywords.extractor import Extractor

        extractor = Extractor(
            config.extractor, device=config.device, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens
        )
    done_now = since_save = 0
    bar = tqdm(
        total=len(todo),
        initial=len(todo) - sum(len(b) for b in pending),
        desc="keywords",
        disable=not progress,
        unit="sample",
    )
    for batch in pending:
        if config.limit is not None and done_now >= config.limit:
            break
        answers = extractor([s.source_text for s in batch])
        if len(answers) != len(batch):
            raise RuntimeError(f"extractor returned {len(answers)} answers for {len(batch)} texts")
        raw.update({s.stem: a for s, a in zip(batch, answers)})
        done_now += len(batch)
        since_save += len(batch)
        bar.update(len(batch))
        if since_save >= config.save_every:
            _save_progress(config, raw)
            since_save = 0
    bar.close()
    _save_progress(config, raw)
    if any(s.stem not in raw for s in todo):
        return None

    report, entries = _finalize(samples, raw, overrides, norm, config.top)
    report.skipped = dict(ds.skips.counts)
    write_keyword_file(out_dir / KEYWORD_FILE, entries)
    atomic_write_json(config.out / REPORT_FILE, {**asdict(report), "dropped": dict(report.dropped)})
    return report


def _finalize(samples, raw, overrides, norm, top) -> tuple[KeywordReport, list[KeywordEntry]]:
    report = KeywordReport(samples=len(samples))
    entries = []
    for s in samples:
        if s.stem in overrides:
            keyword = overrides[s.stem]
            report.overridden += 1
        else:
            answer = parse_answer(raw[s.stem])
            result = normalize(answer, norm)
            report.from_model += 1
            if result.keyword is None:
                report.dropped[result.dropped] += 1
                report.dropped_samples.append({"stem": s.stem, "answer": answer, "reason": result.dropped})
                continue
            keyword = result.keyword
            report.changed += keyword != " ".join(answer.lower().split())
            report.synonyms += result.synonym
        entries.append(
            KeywordEntry(query=s.query, outputs=s.outputs, image=s.image, json=f"{s.stem}.json", keyword=keyword)
        )
    report.written = len(entries)
    counts = Counter(e.keyword for e in entries)
    report.distinct = len(counts)
    report.top = counts.most_common(top)
    return report, entries
