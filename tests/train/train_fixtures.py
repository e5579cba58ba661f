"""Small ReasonSeg data sets written in the released on-disk layout, and training configs for the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def write_reasonseg(root: Path, split: str, items: dict[str, dict], keywords: dict[str, str] | None = None,
                    size: tuple[int, int] = (24, 32)) -> Path:
    """<root>/reason_seg/ReasonSeg/<split>/<stem>.jpg + .json per item; optional keyword_outputs.json.

    items: stem -> {"box": (x0, y0, x1, y1), "text": [...], "ignore": (x0, y0, x1, y1) optional,
    "extra": {more JSON keys} optional}.
    Images are a bright rectangle on noise at the target, so a model can learn where to look.
    """
    folder = root / "reason_seg" / "ReasonSeg" / split
    folder.mkdir(parents=True, exist_ok=True)
    for n, (stem, item) in enumerate(items.items()):
        rng = np.random.default_rng(n)
        pixels = rng.integers(0, 120, (*size, 3), dtype=np.uint8)
        x0, y0, x1, y1 = item["box"]
        pixels[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = (230, 200, 40)
        Image.fromarray(pixels).save(folder / f"{stem}.png")
        shapes = [{"label": "target", "shape_type": "polygon", "points": square(*item["box"])}]
        if "ignore" in item:
            shapes.append({"label": "ignore", "shape_type": "polygon", "points": square(*item["ignore"])})
        data = {"text": item.get("text", [f"which thing is the {stem}?"]), "is_sentence": True, "shapes": shapes,
                **item.get("extra", {})}
        (folder / f"{stem}.json").write_text(json.dumps(data), encoding="utf-8")
    if keywords:
        path = root / "reason_seg" / "ReasonSeg" / "explanatory_key" / "keyword_outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"query": "q", "outputs": "o", "image": f"{s}.png", "json": f"{s}.json", "keyword": k}
                for s, k in keywords.items()]
        path.write_text(json.dumps(rows), encoding="utf-8")
    return root


def write_config(path: Path, data_root: Path, output_dir: Path, **overrides) -> Path:
    """A tiny-model training config (fast on CPU); keyword arguments replace top-level keys."""
    config = {
        "model": "tiny",
        "data": [{"name": "reasonseg", "root": str(data_root), "split": "train", "ratio": 1.0}],
        "max_steps": 6,
        "batch_size": 1,
        "grad_accum": 2,
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 2, "decay": "linear"},
        "precision": "fp32",
        "seed": 7,
        "output_dir": str(output_dir),
        "save_every": 2,
        "keep_last": 2,
        "log_every": 1,
        "num_workers": 0,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
