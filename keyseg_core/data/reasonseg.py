"""ReasonSeg reader (released layout), optionally with Reason-Seg-Key keywords.

Opening only lists the split folder, so tens of thousands of items open in well under a second;
JSON and image are decoded when an item is read. With `skip_bad=True` (or `validate=True`) every
item is checked at open instead, so bad ones are reported once in the main process rather than
surfacing inside DataLoader workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from keyseg_core.data.errors import Collector, DatasetError, SkipReport
from keyseg_core.data.io import image_size, load_rgb, read_json
from keyseg_core.data.keyword_file import KEYWORD_FILE, read_keyword_file
from keyseg_core.data.polygons import Shape, parse_shapes, shapes_to_mask
from keyseg_core.data.sample import SegSample

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MASK_VALUES = np.array([0, 1, 255], dtype=np.uint8)  # background, target, ignore


@dataclass(frozen=True)
class ReasonSegRecord:
    stem: str
    split: str
    image_path: Path
    json_path: Path


@dataclass(frozen=True)
class ReasonSegAnnotation:
    queries: list[str]
    is_sentence: bool
    shapes: list[Shape]
    keyword: str | None  # optional per-image `keyword` field
    mask: str | None = None  # optional per-image `mask`: PNG path relative to the JSON's folder
    query_type: str | None = None  # optional per-image `query_type` (generated scenes)


def reasonseg_dir(root: str | Path) -> Path:
    """Accept the data root (holding reason_seg/ReasonSeg) or the ReasonSeg folder itself."""
    root = Path(root)
    for candidate in (root / "reason_seg" / "ReasonSeg", root):
        if any((candidate / split).is_dir() for split in SPLITS):
            return candidate
    raise DatasetError(root, "-", "missing_dataset", "no reason_seg/ReasonSeg/{train,val,test} folder under it")


def parse_annotation(data: object, path: Path, stem: str) -> ReasonSegAnnotation:
    if not isinstance(data, dict):
        raise DatasetError(path, stem, "bad_json", "top level is not an object")
    text = data.get("text")
    queries = [text] if isinstance(text, str) else text
    if not isinstance(queries, list) or not queries or not all(isinstance(q, str) and q.strip() for q in queries):
        raise DatasetError(path, stem, "no_query", "'text' must be a non-empty list of non-empty strings")
    keyword = data.get("keyword")
    mask = data.get("mask")
    if mask is not None and (not isinstance(mask, str) or not mask.strip()):
        raise DatasetError(path, stem, "bad_mask", "'mask' must be a non-empty relative path to a PNG")
    return ReasonSegAnnotation(
        queries=[q.strip() for q in queries],
        is_sentence=bool(data.get("is_sentence", False)),
        shapes=parse_shapes(data.get("shapes"), path, stem),
        keyword=keyword.strip().lower() if isinstance(keyword, str) and keyword.strip() else None,
        mask=mask,
        query_type=data["query_type"] if isinstance(data.get("query_type"), str) else None,
    )


def load_mask_png(path: Path, stem: str, height: int, width: int) -> np.ndarray:
    """An exact mask PNG (mode L, values 0/1/255, the image's size) as HxW uint8."""
    try:
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            if mode != "L":
                raise DatasetError(path, stem, "bad_mask", f"mask PNG has mode {mode}, expected L")
            if size != (width, height):
                raise DatasetError(
                    path, stem, "bad_mask", f"mask is {size[0]}x{size[1]}, image is {width}x{height}"
                )
            mask = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise DatasetError(path, stem, "missing_mask", "mask PNG not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DatasetError(path, stem, "bad_mask", f"cannot decode mask PNG: {exc}") from exc
    bad = np.setdiff1d(np.unique(mask), MASK_VALUES)
    if bad.size:
        raise DatasetError(path, stem, "bad_mask", f"mask values {bad[:5].tolist()} not in 0/1/255")
    return mask


class ReasonSegDataset:
    """Items are images: one mask each, with all its paraphrased queries.

    keywords: None = use `<ReasonSeg>/explanatory_key/keyword_outputs.json` if it exists; a path =
    that keyword file (must exist); False = no keyword file. A keyword-file entry wins over a
    per-image JSON `keyword` field.
    """

    source = "reasonseg"

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        keywords: str | Path | bool | None = None,
        require_keyword: bool = False,
        skip_bad: bool = False,
        validate: bool = False,
    ) -> None:
        self.dir = reasonseg_dir(root)
        if split not in SPLITS:
            raise DatasetError(
                self.dir, split, "unknown_split", f"unknown split '{split}'; expected one of {', '.join(SPLITS)}"
            )
        self.split = split
        self.require_keyword = require_keyword
        self.skips = SkipReport()
        collector = Collector(skip_bad, self.skips)
        self.keywords = self._load_keywords(keywords)
        self.explanatory = self._load_explanatory()
        self.records = self._index(collector)
        if skip_bad or validate:
            self.records = [r for r in self.records if collector.keeps(lambda r=r: self._validate(r))]

    def _load_keywords(self, keywords: str | Path | bool | None) -> dict[str, str]:
        if keywords is False:
            return {}
        path = self.dir / KEYWORD_FILE if keywords in (None, True) else Path(keywords)
        if keywords in (None, True) and not path.is_file():
            if keywords is True:
                raise DatasetError(path, "-", "missing_file", "keyword file not found")
            return {}
        return {stem: e.keyword for stem, e in read_keyword_file(path).items()}

    def _load_explanatory(self) -> dict[str, tuple[str, str]]:
        """stem -> (query, outputs) from `explanatory/<split>.json` (LISA ships it for train)."""
        path = self.dir / "explanatory" / f"{self.split}.json"
        if not path.is_file():
            return {}
        data = read_json(path)
        if not isinstance(data, list):
            raise DatasetError(path, "-", "bad_json", "expected a list of {image, query, outputs}")
        out = {}
        for i, item in enumerate(data):
            if not isinstance(item, dict) or "image" not in item:
                raise DatasetError(path, i, "bad_explanation", "entry has no 'image'")
            out[Path(str(item["image"])).stem] = (str(item.get("query") or ""), str(item.get("outputs") or ""))
        return out

    def _index(self, collector: Collector) -> list[ReasonSegRecord]:
        split_dir = self.dir / self.split
        if not split_dir.is_dir():
            raise DatasetError(split_dir, self.split, "missing_split", "split folder not found")
        images: dict[str, Path] = {}
        jsons: set[str] = set()
        with os.scandir(split_dir) as entries:
            for entry in entries:
                stem, suffix = os.path.splitext(entry.name)
                if suffix.lower() == ".json":
                    jsons.add(stem)
                elif suffix.lower() in IMAGE_SUFFIXES:
                    images[stem] = split_dir / entry.name
        records = []
        for stem in sorted(images.keys() | jsons):
            json_path = split_dir / f"{stem}.json"
            if stem not in images:
                collector.handle(DatasetError(json_path, stem, "missing_image", "annotation has no image file"))
            elif stem not in jsons:
                collector.handle(
                    DatasetError(images[stem], stem, "missing_annotation", "image has no .json annotation")
                )
            else:
                records.append(ReasonSegRecord(stem, self.split, images[stem], json_path))
        return records

    def _validate(self, record: ReasonSegRecord) -> None:
        ann = self._annotation(record)
        height, width = image_size(record.image_path, record.stem)
        self._mask(record, ann, height, width)
        self._keyword(record, ann)

    def __len__(self) -> int:
        return len(self.records)

    def _annotation(self, record: ReasonSegRecord) -> ReasonSegAnnotation:
        return parse_annotation(read_json(record.json_path, record.stem), record.json_path, record.stem)

    def annotation(self, index: int) -> ReasonSegAnnotation:
        """Queries, is_sentence and shapes of one item, without decoding its image."""
        return self._annotation(self.records[index])

    def _keyword(self, record: ReasonSegRecord, ann: ReasonSegAnnotation) -> str | None:
        keyword = self.keywords.get(record.stem) or ann.keyword
        if keyword is None and self.require_keyword:
            raise DatasetError(
                record.json_path, record.stem, "no_keyword", "no keyword in the keyword file or the JSON"
            )
        return keyword

    def _mask(self, record: ReasonSegRecord, ann: ReasonSegAnnotation, height: int, width: int):
        if ann.mask is not None:  # an exact mask PNG wins over the polygons
            return load_mask_png(record.json_path.parent / ann.mask, record.stem, height, width)
        mask = shapes_to_mask(ann.shapes, height, width)
        if any(s.value == 1 for s in ann.shapes) and not (mask == 1).any():
            raise DatasetError(
                record.json_path, record.stem, "empty_target", "target polygons cover no pixel of the image"
            )
        return mask

    def __getitem__(self, index: int) -> SegSample:
        record = self.records[index]
        ann = self._annotation(record)
        image = load_rgb(record.image_path, record.stem)
        return SegSample(
            id=f"reasonseg/{record.split}/{record.stem}",
            source=self.source,
            image=image,
            mask=self._mask(record, ann, image.shape[0], image.shape[1]),
            queries=ann.queries,
            is_sentence=ann.is_sentence,
            keyword=self._keyword(record, ann),
            explanation=self.explanatory.get(record.stem, ("", ""))[1] or None,
            image_path=str(record.image_path),
            annotation_path=str(record.json_path),
            query_type=ann.query_type,
        )
