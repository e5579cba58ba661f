"""Evaluation on ReasonSeg and the refCOCO family: LISA's gIoU/cIoU, per-sample IoU, worst cases.

Each item is segmented from its first query (`queries[0]`: ReasonSeg's text[0], one refer sentence)
through the same Predictor that serves inference, and scored with keyseg_core.eval.metrics (prediction
= logits > 0 at the original size, 255 ignored). Outputs in the report folder:
    report.json   the numbers, the checkpoint, the data set, and every skipped record by reason
    per_sample.csv one row per item: id, IoU, intersection, union, pixel counts, query
    worst/        side-by-side overlays (ground truth | prediction) of the lowest-IoU items
"""

from __future__ import annotations

import csv
import heapq
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keyseg_core.atomic import atomic_write_json
from keyseg_core.data import DatasetError, SkipReport, open_dataset
from keyseg_core.eval.metrics import IoUAccumulator, intersection_union
from keyseg_core.inference.image_io import save_png
from keyseg_core.inference.overlay import overlay

CSV_FIELDS = ["index", "id", "iou", "intersection", "union", "gt_pixels", "pred_pixels", "query",
              "query_type", "keyword", "predicted_keyword", "keyword_rank"]


class KeywordAccuracy:
    """Top-1 / top-5 accuracy of the decoded [KEY] keyword over the items that have a keyword."""

    def __init__(self) -> None:
        self.count = self.top1 = self.top5 = 0

    def update(self, expected: str | None, ranked: list[str]) -> int | None:
        """Count one item; returns the expected keyword's 1-based rank (None: no keyword or not ranked)."""
        if not expected:
            return None
        rank = ranked.index(expected) + 1 if expected in ranked else None
        self.count += 1
        self.top1 += rank == 1
        self.top5 += rank is not None and rank <= 5
        return rank

    def summary(self) -> dict[str, float | int]:
        if not self.count:
            return {}
        return {"keyword_count": self.count, "keyword_top1": self.top1 / self.count,
                "keyword_top5": self.top5 / self.count}


@dataclass
class EvalSettings:
    batch_size: int = 1
    limit: int | None = None
    skip_bad: bool = False
    worst: int = 8
    progress: bool = True


def open_eval_dataset(name: str, root: str | Path, split: str | None, skip_bad: bool):
    """`reasonseg`+split, `refcocog`+split (default splitBy), or a full name like `refcoco|unc|testA`."""
    if "|" not in name and split is None:
        raise ValueError(f"--split is needed for data set '{name}' (e.g. val, test, testA)")
    return open_dataset(name, root, split, skip_bad=skip_bad)


def eval_name(dataset: Any, name: str, split: str | None) -> str:
    return getattr(dataset, "eval_name", None) or f"{name}|{split}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("_")[:80]


def evaluate(predictor, dataset: Any, output_dir: Path, settings: EvalSettings, info: dict[str, Any]) -> dict[str, Any]:
    """Score `predictor` on every item of `dataset`; write report.json, per_sample.csv and worst/."""
    from tqdm.auto import tqdm

    output_dir.mkdir(parents=True, exist_ok=True)
    skips = SkipReport()
    skips.counts.update(getattr(dataset, "skips", SkipReport()).counts)
    for reason, examples in getattr(dataset, "skips", SkipReport()).examples.items():
        skips.examples[reason] = list(examples)
    accumulator = IoUAccumulator()
    keywords = KeywordAccuracy()
    groups: dict[str, tuple[IoUAccumulator, KeywordAccuracy]] = {}  # per query type, where the data has one
    worst: list[tuple[float, int, dict]] = []  # max-heap by IoU via negation, K lowest kept
    total = len(dataset) if settings.limit is None else min(settings.limit, len(dataset))
    start = time.perf_counter()
    csv_path = output_dir / "per_sample.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        bar = tqdm(total=total, disable=not settings.progress, desc="eval", dynamic_ncols=True)
        for first in range(0, total, settings.batch_size):
            items = []
            for index in range(first, min(first + settings.batch_size, total)):
                try:
                    items.append((index, dataset[index]))
                except DatasetError as exc:
                    if not settings.skip_bad:
                        raise
                    skips.add(exc)
            bar.update(min(settings.batch_size, total - first))
            if not items:
                continue
            predictions = predictor.predict_batch([s.image for _, s in items], [s.queries[0] for _, s in items])
            for (index, sample), pred in zip(items, predictions):
                inter, union = intersection_union(pred.mask, sample.mask)
                iou = accumulator.update(pred.mask, sample.mask)
                ranked = [c.text for c in pred.keyword_topk]
                rank = keywords.update(sample.keyword, ranked)
                if sample.query_type:
                    group = groups.setdefault(sample.query_type, (IoUAccumulator(), KeywordAccuracy()))
                    group[0].update(pred.mask, sample.mask)
                    group[1].update(sample.keyword, ranked)
                writer.writerow({"index": index, "id": sample.id, "iou": f"{iou:.6f}", "intersection": inter,
                                 "union": union, "gt_pixels": int((sample.mask == 1).sum()),
                                 "pred_pixels": int(pred.mask.sum()), "query": sample.queries[0],
                                 "query_type": sample.query_type or "",
                                 "keyword": sample.keyword or "", "predicted_keyword": pred.keyword,
                                 "keyword_rank": rank or ""})
                entry = (-iou, -index, {"id": sample.id, "iou": iou, "image": sample.image,
                                        "gt": sample.mask == 1, "pred": pred.mask, "query": sample.queries[0]})
                if len(worst) < settings.worst:
                    heapq.heappush(worst, entry)
                elif settings.worst and entry[:2] > worst[0][:2]:
                    heapq.heapreplace(worst, entry)
        bar.close()
    if accumulator.count == 0:
        raise ValueError(f"no item could be evaluated ({skips.summary()})")
    overlays = _write_worst(output_dir / "worst", sorted(worst, reverse=True))
    report = {
        **info,
        **accumulator.summary(),
        **keywords.summary(),
        **({"by_query_type": {name: {**iou.summary(), **kw.summary()} for name, (iou, kw) in sorted(groups.items())}}
           if groups else {}),
        "query_index": 0,
        "seconds": round(time.perf_counter() - start, 3),
        "skipped": {"total": skips.total, "by_reason": dict(skips.counts), "examples": skips.examples},
        "per_sample_csv": str(csv_path),
        "worst_overlays": overlays,
    }
    atomic_write_json(output_dir / "report.json", report)
    return report


def _write_worst(folder: Path, entries: list[tuple[float, int, dict]]) -> list[str]:
    """Ground truth (left) and prediction (right) overlays, lowest IoU first."""
    if not entries:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, (_, _, e) in enumerate(entries, 1):
        left = overlay(e["image"], e["gt"], "ground truth")
        right = overlay(e["image"], e["pred"], f"IoU {e['iou']:.3f}: {e['query'][:60]}")
        path = folder / f"{rank:02d}_{_safe(e['id'])}.png"
        save_png(path, np.concatenate([left, right], axis=1))
        paths.append(str(path))
    return paths
