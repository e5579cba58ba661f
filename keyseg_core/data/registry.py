"""`open_dataset(name, root, split)`: one entry point for every reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keyseg_core.data.coco import CocoInstancesDataset
from keyseg_core.data.reasonseg import ReasonSegDataset
from keyseg_core.data.refer import DEFAULT_SPLIT_BY, RefDataset
from keyseg_core.data.vqa import VqaDataset

DATASETS = ("reasonseg", "refcoco", "refcoco+", "refcocog", "coco", "vqa")


def parse_eval_name(name: str) -> tuple[str, str, str]:
    """'refcoco|unc|val' -> ('refcoco', 'unc', 'val')."""
    parts = name.split("|")
    if len(parts) != 3 or parts[0] not in DEFAULT_SPLIT_BY or not all(parts):
        raise ValueError(f"bad refer evaluation name '{name}'; expected e.g. refcoco|unc|val, refcocog|umd|test")
    return parts[0], parts[1], parts[2]


def open_dataset(name: str, root: str | Path, split: str | None = None, **kwargs: Any):
    """Open a data set by name. `name` may also be a refer evaluation name ('refcoco+|unc|testB'),
    in which case `split` is taken from it. Keyword arguments go to the reader (skip_bad, validate,
    keywords, unit, split_by, paths, ...); see docs/data.md.

    coco: `root` holds `annotations/instances_<split>.json` and `<split>/` images (COCO 2017
    layout) unless `instances=` / `image_dir=` are given.
    vqa: LISA's layout, `root/llava_dataset/<split>.json` (e.g. llava_instruct_150k) with images in
    `root/coco/train2017/`, unless `json=` / `image_dir=` are given (any LLaVA-Instruct file + folder).
    """
    if "|" in name:
        name, split_by, parsed_split = parse_eval_name(name)
        if split not in (None, parsed_split):
            raise ValueError(f"split '{split}' contradicts the evaluation name's '{parsed_split}'")
        split = parsed_split
        kwargs["split_by"] = split_by
    if name not in DATASETS:
        raise ValueError(f"unknown data set '{name}'; expected one of {', '.join(DATASETS)}")
    if split is None:
        raise ValueError(f"data set '{name}' needs a split")
    root = Path(root)
    if name == "reasonseg":
        return ReasonSegDataset(root, split, **kwargs)
    if name == "coco":
        instances = kwargs.pop("instances", root / "annotations" / f"instances_{split}.json")
        image_dir = kwargs.pop("image_dir", root / split)
        return CocoInstancesDataset(instances, image_dir, **kwargs)
    if name == "vqa":
        json_path = kwargs.pop("json", root / "llava_dataset" / f"{split}.json")
        image_dir = kwargs.pop("image_dir", root / "coco" / "train2017")
        return VqaDataset(json_path, image_dir, **kwargs)
    return RefDataset(root, name, split, **kwargs)
