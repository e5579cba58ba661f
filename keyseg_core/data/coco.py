"""Plain COCO instance data (instances json + image folder) as referring data whose query and
keyword are the category name.

unit="category" (default): one item per (image, category), the mask being the union of all that
category's instances in the image, so the query "dog" never points at only one of two dogs.
unit="annotation": one item per annotation (ambiguous when a category repeats; useful for
instance-level work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from keyseg_core.data.coco_index import CocoIndex
from keyseg_core.data.errors import Collector, DatasetError, SkipReport
from keyseg_core.data.sample import SegSample


@dataclass(frozen=True)
class _Item:
    image_id: int
    category_id: int
    ann_ids: tuple[int, ...]


class CocoInstancesDataset:
    source = "coco"

    def __init__(
        self,
        instances: str | Path,
        image_dir: str | Path,
        *,
        unit: Literal["category", "annotation"] = "category",
        skip_bad: bool = False,
        validate: bool = False,
    ) -> None:
        if unit not in ("category", "annotation"):
            raise ValueError(f"unit must be 'category' or 'annotation', got '{unit}'")
        self.unit = unit
        self.coco = CocoIndex(instances, image_dir)
        self.skips = SkipReport()
        collector = Collector(skip_bad, self.skips)
        groups: dict[tuple, list[int]] = {}
        for ann_id, ann in self.coco.annotations.items():
            key = (int(ann["image_id"]), int(ann.get("category_id", -1)))
            groups.setdefault(key if unit == "category" else key + (ann_id,), []).append(ann_id)
        self.items = [
            _Item(key[0], key[1], tuple(ids))
            for key, ids in sorted(groups.items())
            if collector.keeps(lambda: self._validate(key[0], key[1], ids, skip_bad or validate))
        ]

    def _validate(self, image_id: int, category_id: int, ann_ids: list[int], deep: bool) -> None:
        record = f"image_id {image_id} annotation(s) {ann_ids}"
        if category_id not in self.coco.categories:
            raise DatasetError(self.coco.path, record, "unknown_category",
                               f"category_id {category_id} not in categories")
        img = self.coco.image_of(image_id, record)
        if deep:
            self.coco.rle([self.coco.annotations[a] for a in ann_ids], img, record)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> SegSample:
        item = self.items[index]
        record = f"image_id {item.image_id} annotation(s) {list(item.ann_ids)}"
        img = self.coco.image_of(item.image_id, record)
        image, mask = self.coco.load([self.coco.annotations[a] for a in item.ann_ids], img, record)
        name = self.coco.categories[item.category_id]
        return SegSample(
            id=f"coco/{item.image_id}/{item.category_id}"
            + (f"/{item.ann_ids[0]}" if self.unit == "annotation" else ""),
            source=self.source,
            image=image,
            mask=mask,
            queries=[name],
            is_sentence=False,
            keyword=name,
            image_path=str(self.coco.image_dir / img.file_name),
            annotation_path=str(self.coco.path),
        )
