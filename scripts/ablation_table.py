"""Print the miniature ablation table (mean and spread over seeds) from `keyseg eval` reports.

Usage: python scripts/ablation_table.py eval/ablation_tiny [--json table.json]
Reads <dir>/<row>_s<seed>/report.json as scripts/ablations_tiny.sh writes them.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROWS = [("seg_only", "Table 3: [SEG] only (LISA)"), ("seg_sa", "Table 3: [SEG] + SA"),
        ("keyseg", "Table 3/4: [SEG] + [KEY] + CA + SA + residual"), ("ca_only", "Table 4: CA only"),
        ("sa_only", "Table 4: SA only")]
METRICS = ("giou", "ciou", "keyword_top1")


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", type=Path, help="folder of <row>_s<seed>/report.json")
    parser.add_argument("--json", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    table = []
    print("| row | seeds | gIoU | cIoU | keyword top-1 |")
    print("|---|---|---|---|---|")
    for row, title in ROWS:
        reports = sorted(args.reports.glob(f"{row}_s*/report.json"))
        if not reports:
            continue
        loaded = [json.loads(p.read_text()) for p in reports]
        seeds = [p.parent.name.rsplit("_s", 1)[1] for p in reports]
        values = {m: [r.get(m) for r in loaded] for m in METRICS}
        has_key = row not in ("seg_only", "seg_sa")  # no [KEY]: no keyword to decode
        cells = [spread(values[m]) if (m != "keyword_top1" or has_key) else "n/a" for m in METRICS]
        print(f"| {title} | {', '.join(seeds)} | " + " | ".join(cells) + " |")
        table.append({"row": row, "title": title, "seeds": seeds, **values, "count": loaded[0].get("count")})
    if args.json:
        args.json.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
