"""The demo's outputs in --out: an overlay per query (the published mask tinted, the true target
outlined in green), contact_sheet.png, summary.json and summary.csv, and the table it prints.

summary.json carries a mark (WRITTEN_BY), so a later run replaces only what an earlier demo wrote.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from keyseg_ros.tools.demo.scenes import SCENE_SIZE, SPLIT, Item
from keyseg_ros.tools.demo.scoring import mask_of, shown

WRITTEN_BY = "keyseg demo"  # summary.json's mark: a later run may replace this folder's demo files
GREEN = np.array([40, 220, 60], np.uint8)


def summarise(opts: argparse.Namespace, ns: str, rows: list[dict], *, model: str, untrained: bool | None,
              topics: dict[str, int], timings: dict[str, float], wall_s: float,
              processes: list[dict]) -> dict:
    """summary.json's totals and settings (its `queries` are the rows)."""
    latencies = [r["latency_ms"] for r in rows]
    return {
        "written_by": WRITTEN_BY,
        "model": model, "untrained": bool(untrained), "device": opts.device,
        "split": SPLIT, "seed": opts.seed, "scene_size": list(SCENE_SIZE), "rate_hz": opts.rate,
        "hold": opts.hold, "namespace": ns, "attached": bool(opts.attach),
        "keywords_right": sum(r["correct"] for r in rows),
        "keyword_accuracy": round(sum(r["correct"] for r in rows) / len(rows), 4),
        "mean_iou": round(float(np.mean([r["iou"] for r in rows])), 4),
        "median_latency_ms": round(float(np.median(latencies)), 1),
        "median_first_answer_s": round(float(np.median([r["first_answer_s"] for r in rows])), 2),
        "topics": topics,
        "node_ready_s": round(timings.get("node_ready_s", 0.0), 2),
        "warmup_s": round(timings.get("warmup_s", 0.0), 2),
        "wall_s": round(wall_s, 1),
        "processes": processes,
    }


def _edge(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of `mask`, two pixels wide."""
    m = mask.astype(bool)
    p = np.pad(m, 1)
    inner = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    edge = np.pad(m & ~inner, 1)
    return edge[1:-1, 1:-1] | edge[:-2, 1:-1] | edge[2:, 1:-1] | edge[1:-1, :-2] | edge[1:-1, 2:]


def draw_answer(image: np.ndarray, predicted: np.ndarray, target: np.ndarray, label: str) -> np.ndarray:
    """The node's overlay (published mask tinted and outlined in yellow, keyword label) with the true
    target's outline in green (with a dark rim) on top, except over the label."""
    from keyseg_core.inference.overlay import overlay

    plain = overlay(image, predicted)
    out = overlay(image, predicted, label)
    edge = _edge(target)
    changed = np.argwhere((plain != out).any(axis=2))
    if changed.size:  # the label box: keep it readable
        (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
        edge[y0 : y1 + 1, x0 : x1 + 1] = False
    p = np.pad(edge, 1)
    halo = (p[1:-1, 1:-1] | p[:-2, 1:-1] | p[2:, 1:-1] | p[1:-1, :-2] | p[1:-1, 2:]) & ~edge
    out[halo] = 0  # a dark rim keeps the green visible on any background
    out[edge] = GREEN
    return out


def write_outputs(out: Path, items: list[Item], rows: list[dict], summary: dict) -> dict[str, str]:
    """Overlays, contact sheet, summary.json and summary.csv; returns their paths."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    from keyseg_core.scenes.writer import contact_sheet

    paths: dict[str, str] = {}
    tiles = []
    for item, row in zip(items, rows):
        predicted = mask_of(item.results[0][1].mask)
        label = shown(row) if not row.get("present", True) else f"{shown(row)} ({row['keyword_prob']:.2f})"
        drawn = draw_answer(item.image, predicted, item.target, label)
        path = out / f"{item.stem}_overlay.png"
        PILImage.fromarray(drawn).save(path)
        row["overlay"] = str(path)
        verdict = "right" if row["correct"] else f"expected {row['expected_keyword']}"
        # Already drawn: an empty mask makes the sheet paste the picture as it is.
        tiles.append((drawn, np.zeros(predicted.shape, bool), f"{item.index}. [{item.qtype}] {item.query}",
                      f"-> {shown(row)} ({verdict}), IoU {row['iou']:.2f}, "
                      f"{row['latency_ms']:.0f} ms"))
    columns = 3 if len(tiles) in (3, 5, 6, 9) else min(4, len(tiles))
    sheet_path = out / "contact_sheet.png"
    contact_sheet(tiles, sheet_path, columns=columns)
    # A title line above the grid: model, legend, totals.
    grid = PILImage.open(sheet_path).convert("RGB")
    title_h = 36
    sheet = PILImage.new("RGB", (grid.width, grid.height + title_h), (255, 255, 255))
    sheet.paste(grid, (0, title_h))
    draw = ImageDraw.Draw(sheet)
    model = summary["model"] + (" (UNTRAINED weights)" if summary["untrained"] else "")
    draw.text((4, 3), f"keyseg demo - model {model} - keywords right {summary['keywords_right']}/"
                      f"{len(rows)}, mean IoU {summary['mean_iou']:.2f}, median latency "
                      f"{summary['median_latency_ms']:.0f} ms", fill=(0, 0, 0))
    draw.text((4, 19), "tinted + yellow outline: the mask keyseg_node published; green outline: the "
                       "scene's true target", fill=(60, 60, 60))
    sheet.save(sheet_path)
    paths["contact_sheet"] = str(sheet_path)

    columns_csv = ["index", "query_type", "query", "expected_keyword", "published_keyword", "keyword_prob",
                   "correct", "iou", "latency_ms", "model_ms", "first_answer_s", "answers", "background",
                   "overlay"]
    csv_path = out / "summary.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns_csv, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["summary_csv"] = str(csv_path)
    json_path = out / "summary.json"
    paths["summary_json"] = str(json_path)
    summary["outputs"] = dict(paths)
    json_path.write_text(json.dumps({**summary, "queries": rows}, indent=2) + "\n", encoding="utf-8")
    return paths


def format_table(rows: list[dict]) -> str:
    """latency: frame published -> result received (median over the held frames); answer: query
    sent -> its first answer."""
    def cut(text: str, width: int) -> str:
        return text if len(text) <= width else text[: width - 3] + "..."

    head = (f"{'#':>2}  {'type':<8}  {'query':<52}  {'expected':<12}  {'published':<16}  {'IoU':>5}  "
            f"{'latency':>8}  {'answer':>6}")
    lines = [head, "-" * len(head)]
    for r in rows:
        published = shown(r) + ("" if r["correct"] else " (x)")
        lines.append(f"{r['index']:>2}  {r['query_type']:<8}  {cut(r['query'], 52):<52}  "
                     f"{cut(r['expected_keyword'], 12):<12}  {cut(published, 16):<16}  {r['iou']:>5.2f}  "
                     f"{r['latency_ms']:>5.0f} ms  {r['first_answer_s']:>4.1f} s")
    return "\n".join(lines)


def print_results(rows: list[dict], summary: dict, paths: dict[str, str]) -> None:
    """The table, the totals and where the outputs are."""
    print()
    print(format_table(rows))
    print()
    print(f"keywords right {summary['keywords_right']}/{len(rows)}, mean IoU {summary['mean_iou']:.2f}, "
          f"median latency {summary['median_latency_ms']:.0f} ms (frame sent to result received), first "
          f"answer {summary['median_first_answer_s']:.1f} s after the query; "
          f"model {summary['model']}" + (" (UNTRAINED weights)" if summary["untrained"] else ""))
    print(f"wrote {paths['contact_sheet']}, {paths['summary_json']}, {paths['summary_csv']} and "
          f"{len(rows)} overlays ({summary['wall_s']:.0f} s)")


def clear_previous(out: Path) -> None:
    """Remove what an earlier demo run wrote into `out`: only when its summary.json says it is the
    demo's, and only the demo's own file names."""
    try:
        previous = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(previous, dict) or previous.get("written_by") != WRITTEN_BY:
        return
    for pattern in ("q[0-9][0-9]_*_overlay.png", "scenes/q[0-9][0-9].jpg", "logs/*.log", "summary.csv",
                    "contact_sheet.png", "summary.json"):
        for path in out.glob(pattern):
            path.unlink()
