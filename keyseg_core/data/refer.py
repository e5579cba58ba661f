"""refCOCO / refCOCO+ / refCOCOg reader over the refer API files (`refs(<splitBy>).p` + COCO
`instances.json`). Every sentence of every ref in the split is one item with its ref's mask
(unit="sentence", the evaluation protocol); unit="ref" gives one item per ref with all its
sentences as queries (for training).

The refs file is a pickle. Unpickling can execute code, so it is read with an unpickler that
refuses every global: the real files hold only lists, dicts, str and int, and anything else is
rejected instead of run. Still, only open refs files from a source you trust.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from keyseg_core.data.coco_index import CocoIndex
from keyseg_core.data.errors import Collector, DatasetError, SkipReport
from keyseg_core.data.sample import SegSample

DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        raise pickle.UnpicklingError(f"refused global {module}.{name}: refs files hold only plain data")


def load_refs(path: str | Path) -> list[dict]:
    """Read a refer pickle with no globals allowed (protocol-2 Python 2 pickles included)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetError(path, "-", "missing_file", "refs pickle not found") from exc
    try:
        # Python 2 `str` objects hold bytes: decode as UTF-8, else latin-1 (never fails)
        try:
            refs = _PlainUnpickler(io.BytesIO(raw), encoding="utf-8").load()
        except UnicodeDecodeError:
            refs = _PlainUnpickler(io.BytesIO(raw), encoding="latin-1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DatasetError(path, "-", "bad_pickle", f"cannot read refs pickle: {exc}") from exc
    if not isinstance(refs, list) or not all(isinstance(r, dict) for r in refs):
        raise DatasetError(path, "-", "bad_pickle", "expected a list of ref dicts")
    return refs


@dataclass(frozen=True)
class _Item:
    ref: int  # position in self.refs
    sentences: tuple[int, ...]  # positions in the ref's sentence list


class RefDataset:
    """One of refcoco, refcoco+, refcocog under `<root>/refer_seg/` (paths overridable)."""

    def __init__(
        self,
        root: str | Path,
        name: str,
        split: str,
        *,
        split_by: str | None = None,
        unit: Literal["sentence", "ref"] = "sentence",
        refs_path: str | Path | None = None,
        instances_path: str | Path | None = None,
        image_dir: str | Path | None = None,
        skip_bad: bool = False,
        validate: bool = False,
    ) -> None:
        if name not in DEFAULT_SPLIT_BY:
            raise ValueError(f"unknown refer data set '{name}'; expected one of {', '.join(DEFAULT_SPLIT_BY)}")
        if unit not in ("sentence", "ref"):
            raise ValueError(f"unit must be 'sentence' or 'ref', got '{unit}'")
        root = Path(root)
        self.source = name
        self.split_by = split_by or DEFAULT_SPLIT_BY[name]
        self.split = split
        self.unit = unit
        self.refs_path = Path(refs_path or root / "refer_seg" / name / f"refs({self.split_by}).p")
        self.coco = CocoIndex(
            instances_path or root / "refer_seg" / name / "instances.json",
            image_dir or root / "refer_seg" / "images" / "mscoco" / "images" / "train2014",
        )
        all_refs = load_refs(self.refs_path)
        available = sorted({str(r.get("split")) for r in all_refs})
        if split not in available:
            raise DatasetError(
                self.refs_path, split, "unknown_split", f"unknown split '{split}'; this file has {', '.join(available)}"
            )
        self.skips = SkipReport()
        collector = Collector(skip_bad, self.skips)
        deep = skip_bad or validate
        self.refs = [r for r in all_refs
                     if r.get("split") == split and collector.keeps(lambda r=r: self._validate(r, deep))]
        self.items = [
            _Item(i, (j,)) if unit == "sentence" else _Item(i, tuple(range(len(ref["sentences"]))))
            for i, ref in enumerate(self.refs)
            for j in (range(len(ref["sentences"])) if unit == "sentence" else [0])
        ]

    @property
    def eval_name(self) -> str:
        return f"{self.source}|{self.split_by}|{self.split}"

    def _validate(self, ref: dict, deep: bool) -> None:
        """Structural checks always (cheap); mask decoding checks only when `deep`."""
        record = f"ref_id {ref.get('ref_id')}"
        sentences = ref.get("sentences")
        if not isinstance(sentences, list) or not sentences or not all(_sentence(s) for s in sentences):
            raise DatasetError(self.refs_path, record, "no_query", "ref has no non-empty sentence")
        ann = self.coco.annotation(ref.get("ann_id"), record)
        img = self.coco.image_of(ann["image_id"], record)
        if deep:
            self.coco.rle([ann], img, record)

    def __len__(self) -> int:
        return len(self.items)

    def category(self, index: int) -> str:
        """COCO category name of an item's object, without decoding anything (e.g. a [KEY] target)."""
        ref = self.refs[self.items[index].ref]
        ann = self.coco.annotation(ref["ann_id"], f"ref_id {ref['ref_id']}")
        category_id = int(ann.get("category_id", ref.get("category_id", -1)))
        if category_id not in self.coco.categories:
            raise DatasetError(
                self.coco.path, f"ref_id {ref['ref_id']}", "unknown_category", f"category_id {category_id} not in categories"
            )
        return self.coco.categories[category_id]

    def __getitem__(self, index: int) -> SegSample:
        item = self.items[index]
        ref = self.refs[item.ref]
        record = f"ref_id {ref['ref_id']}"
        ann = self.coco.annotation(ref["ann_id"], record)
        img = self.coco.image_of(ann["image_id"], record)
        image, mask = self.coco.load([ann], img, record)
        sentences = [ref["sentences"][j] for j in item.sentences]
        suffix = f"/{sentences[0].get('sent_id', item.sentences[0])}" if self.unit == "sentence" else ""
        return SegSample(
            id=f"{self.eval_name}/{ref['ref_id']}{suffix}",
            source=self.source,
            image=image,
            mask=mask,
            queries=[_sentence(s) for s in sentences],
            is_sentence=False,
            image_path=str(self.coco.image_dir / img.file_name),
            annotation_path=str(self.coco.path),
        )


def _sentence(sentence: object) -> str:
    """The lower-cased `sent` form LISA evaluates on, falling back to `raw`."""
    if not isinstance(sentence, dict):
        return ""
    return str(sentence.get("sent") or sentence.get("raw") or "").strip()
