"""Writers of small fixture data sets in the exact on-disk formats (see docs/data.md)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, height: int, width: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode=mode).save(path, quality=90)
    return path


def square(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


class ReasonSegWriter:
    """Builds <root>/reason_seg/ReasonSeg/<split>/<stem>.jpg + .json."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "reason_seg" / "ReasonSeg"

    def add(
        self,
        split: str,
        stem: str,
        shapes: list | None = None,
        text: list | None = None,
        *,
        size: tuple[int, int] = (20, 30),
        image: bool = True,
        encoding: str = "utf-8",
        raw: bytes | None = None,
        mode: str = "RGB",
        **extra,
    ) -> Path:
        folder = self.dir / split
        folder.mkdir(parents=True, exist_ok=True)
        if image:
            write_image(folder / f"{stem}.jpg", *size, mode=mode)
        data = {
            "text": text or [f"what is the target of {stem}?"],
            "is_sentence": True,
            "shapes": shapes
            if shapes is not None
            else [{"label": "target", "shape_type": "polygon", "points": square(2, 2, 6, 6)}],
            **extra,
        }
        path = folder / f"{stem}.json"
        path.write_bytes(raw if raw is not None else json.dumps(data, ensure_ascii=False).encode(encoding))
        return path

    def explanatory(self, entries: list[dict]) -> None:
        path = self.dir / "explanatory" / "train.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(entries))

    def keywords(self, mapping: dict[str, str]) -> Path:
        path = self.dir / "explanatory_key" / "keyword_outputs.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [
            {"query": "q", "outputs": "o", "image": f"{s}.jpg", "json": f"{s}.json", "keyword": k}
            for s, k in mapping.items()
        ]
        path.write_text(json.dumps(rows))
        return path


@pytest.fixture
def image_writer():
    """write_image(path, height, width, mode="RGB") as a fixture (test modules do not import conftest)."""
    return write_image


@pytest.fixture
def reasonseg(tmp_path: Path) -> ReasonSegWriter:
    return ReasonSegWriter(tmp_path / "data")


def coco_name(image_id: int) -> str:
    return f"COCO_train2014_{image_id:012d}.jpg"


class ReferWriter:
    """Builds <root>/refer_seg/<name>/instances.json + refs(<split_by>).p and train2014 images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.image_dir = root / "refer_seg" / "images" / "mscoco" / "images" / "train2014"
        self.images: list[dict] = []
        self.anns: list[dict] = []
        self.refs: list[dict] = []
        self.categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]

    def image(self, image_id: int, height: int = 16, width: int = 20, mode: str = "RGB", write: bool = True) -> None:
        self.images.append({"id": image_id, "file_name": coco_name(image_id), "height": height, "width": width})
        if write:
            write_image(self.image_dir / coco_name(image_id), height, width, mode=mode)

    def ann(self, ann_id: int, image_id: int, segmentation, category_id: int = 18, iscrowd: int = 0) -> None:
        self.anns.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": segmentation,
                "bbox": [0, 0, 1, 1],
                "area": 1.0,
                "iscrowd": iscrowd,
            }
        )

    def ref(self, ref_id: int, ann_id: int, image_id: int, split: str, sentences: list[str]) -> None:
        sents = [
            {"sent_id": ref_id * 10 + i, "raw": s.upper(), "sent": s, "tokens": s.split()}
            for i, s in enumerate(sentences)
        ]
        self.refs.append(
            {
                "ref_id": ref_id,
                "ann_id": ann_id,
                "image_id": image_id,
                "category_id": 18,
                "split": split,
                "file_name": f"{coco_name(image_id)[:-4]}_{ann_id}.jpg",
                "sent_ids": [s["sent_id"] for s in sents],
                "sentences": sents,
            }
        )

    def write(self, name: str = "refcoco", split_by: str = "unc") -> Path:
        folder = self.root / "refer_seg" / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "instances.json").write_text(
            json.dumps({"images": self.images, "annotations": self.anns, "categories": self.categories})
        )
        with open(folder / f"refs({split_by}).p", "wb") as f:
            pickle.dump(self.refs, f, protocol=2)  # the released files are protocol-2 pickles
        return folder


@pytest.fixture
def refer(tmp_path: Path) -> ReferWriter:
    return ReferWriter(tmp_path / "data")
