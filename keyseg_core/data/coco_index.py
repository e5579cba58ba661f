"""A COCO `instances.json` held as id -> record maps, validated enough that later lookups cannot
fail with a bare KeyError; shared by the refer readers and the plain COCO reader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyseg_core.data.coco_masks import decode_rle, rle_area, segmentation_to_rle, union_rles
from keyseg_core.data.errors import DatasetError
from keyseg_core.data.io import load_rgb, read_json


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    height: int
    width: int


class CocoIndex:
    def __init__(self, path: str | Path, image_dir: str | Path) -> None:
        self.path = Path(path)
        self.image_dir = Path(image_dir)
        data = read_json(self.path)
        if not isinstance(data, dict):
            raise DatasetError(self.path, "-", "bad_json", "top level is not an object")
        self.images: dict[int, CocoImage] = {}
        for i, img in enumerate(data.get("images") or []):
            try:
                self.images[int(img["id"])] = CocoImage(
                    int(img["id"]), str(img["file_name"]), int(img["height"]), int(img["width"])
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise DatasetError(
                    self.path, f"images[{i}]", "bad_image_record", f"needs id, file_name, height, width: {exc}"
                ) from exc
        self.annotations: dict[int, dict] = {}
        for i, ann in enumerate(data.get("annotations") or []):
            if not isinstance(ann, dict) or "id" not in ann or "image_id" not in ann or "segmentation" not in ann:
                raise DatasetError(self.path, f"annotations[{i}]", "bad_annotation", "needs id, image_id, segmentation")
            self.annotations[int(ann["id"])] = ann
        self.categories: dict[int, str] = {
            int(c["id"]): str(c["name"]) for c in data.get("categories") or [] if isinstance(c, dict) and "id" in c
        }
        try:
            self._files = set(os.listdir(self.image_dir))
        except FileNotFoundError as exc:
            raise DatasetError(self.image_dir, "-", "missing_image_dir", "image folder not found") from exc

    def image_of(self, image_id: int, record: object) -> CocoImage:
        """The image record, checked to exist in the JSON and on disk."""
        img = self.images.get(int(image_id))
        if img is None:
            raise DatasetError(self.path, record, "missing_image_record", f"image id {image_id} not in instances")
        if img.file_name not in self._files:
            raise DatasetError(self.image_dir / img.file_name, record, "missing_image", "image file not found")
        return img

    def annotation(self, ann_id: int, record: object) -> dict:
        ann = self.annotations.get(int(ann_id))
        if ann is None:
            raise DatasetError(self.path, record, "missing_annotation", f"annotation id {ann_id} not in instances")
        return ann

    def rle(self, anns: list[dict], img: CocoImage, record: object) -> dict:
        """Union of the annotations' masks; an empty result is an error (nothing to segment)."""
        rle = union_rles(
            [segmentation_to_rle(a["segmentation"], img.height, img.width, self.path, record) for a in anns]
        )
        if rle_area(rle) == 0:
            raise DatasetError(self.path, record, "empty_target", "mask has no pixel inside the image")
        return rle

    def load(self, anns: list[dict], img: CocoImage, record: object) -> tuple[np.ndarray, np.ndarray]:
        """(image HxWx3, mask HxW 0/1) checked to have the size the JSON declares."""
        path = self.image_dir / img.file_name
        image = load_rgb(path, record)
        if image.shape[:2] != (img.height, img.width):
            raise DatasetError(
                path, record, "size_mismatch", f"image is {image.shape[:2]}, instances say {(img.height, img.width)}"
            )
        return image, decode_rle(self.rle(anns, img, record))
