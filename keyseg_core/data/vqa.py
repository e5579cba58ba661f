"""Visual question answering in the LLaVA-Instruct format: images with conversations, no masks.

The JSON is a list of `{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."},
{"from": "gpt", "value": "..."}, ...]}` (LLaVA's llava_instruct_150k.json, or any file written the
same way, e.g. from generated scenes). An item is one image with all its turns; training puts the
first question into the model's prompt and the later turns after it, with the language-modelling
loss on every answer. Items have no [SEG], so no mask loss and no SAM pass (LISA's 'vqa' data).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyseg_core.data.errors import Collector, DatasetError, SkipReport
from keyseg_core.data.io import image_size, load_rgb, read_json

IMAGE_PLACEHOLDER = re.compile(r"\s*<image>\s*")
ROLES = ("human", "gpt")


@dataclass
class VqaSample:
    """One image and its conversation: `turns` are (question, answer) pairs, the first one about the image."""

    id: str
    source: str
    image: np.ndarray
    turns: list[tuple[str, str]]
    image_path: str | None = None
    annotation_path: str | None = None


@dataclass(frozen=True)
class _Record:
    id: str
    image: str
    turns: tuple[tuple[str, str], ...]
    where: str  # "<json> [index] id <id>", so an image error also names the record that points at it


def parse_conversation(item: object, path: Path, index: int) -> _Record:
    """Validate one LLaVA-Instruct record; a leading gpt turn is dropped, as LLaVA and LISA do."""
    where = f"[{index}]"
    if not isinstance(item, dict):
        raise DatasetError(path, where, "bad_record", "record is not an object")
    where = f"[{index}] id {item.get('id', '?')}"
    image = item.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DatasetError(path, where, "no_image", "record has no 'image' (text-only records are not supported)")
    turns = item.get("conversations")
    if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
        raise DatasetError(path, where, "bad_conversation", "'conversations' must be a list of {from, value}")
    if turns and turns[0].get("from") != "human":
        turns = turns[1:]
    if len(turns) < 2:
        raise DatasetError(path, where, "bad_conversation", "needs at least one human question and one gpt answer")
    pairs = []
    for j in range(0, len(turns) - len(turns) % 2, 2):
        question, answer = turns[j], turns[j + 1]
        if (question.get("from"), answer.get("from")) != ROLES:
            raise DatasetError(path, where, "bad_conversation", f"turns {j}, {j + 1} are not human then gpt")
        q, a = question.get("value"), answer.get("value")
        if not isinstance(q, str) or not isinstance(a, str) or not a.strip():
            raise DatasetError(path, where, "bad_conversation", f"turn {j} or {j + 1} has no text")
        q = IMAGE_PLACEHOLDER.sub(" ", q).strip() if j == 0 else q.strip()
        if "<image>" in q or "<image>" in a or not q:
            raise DatasetError(path, where, "bad_conversation",
                               "only the first question may hold <image>, and a question needs text besides it")
        pairs.append((q, a.strip()))
    return _Record(str(item.get("id", index)), image.strip(), tuple(pairs), f"{path} {where}")


class VqaDataset:
    """Reads the whole JSON at open (LLaVA-Instruct-150K: ~230 MB, tens of seconds); images on access."""

    source = "vqa"

    def __init__(
        self,
        json_path: str | Path,
        image_dir: str | Path,
        *,
        skip_bad: bool = False,
        validate: bool = False,
    ) -> None:
        self.path = Path(json_path)
        self.image_dir = Path(image_dir)
        self.skips = SkipReport()
        collector = Collector(skip_bad, self.skips)
        data = read_json(self.path)
        if not isinstance(data, list):
            raise DatasetError(self.path, "-", "bad_json", "expected a list of LLaVA-Instruct records")
        self.records: list[_Record] = []
        for index, item in enumerate(data):
            try:
                record = parse_conversation(item, self.path, index)
                if skip_bad or validate:
                    image_size(self.image_dir / record.image, record.where)
            except DatasetError as exc:
                collector.handle(exc)
                continue
            self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> VqaSample:
        record = self.records[index]
        image_path = self.image_dir / record.image
        return VqaSample(
            id=f"vqa/{record.id}",
            source=self.source,
            image=load_rgb(image_path, record.where),
            turns=list(record.turns),
            image_path=str(image_path),
            annotation_path=str(self.path),
        )
