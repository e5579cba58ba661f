"""Reason-Seg-Key keyword file (`ReasonSeg/explanatory_key/keyword_outputs.json`), the KeySeg
authors' format: a list of {"query", "outputs", "image": "<stem>.jpg", "json": "<stem>.json",
"keyword"}, one entry per training image."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from keyseg_core.atomic import atomic_write_json
from keyseg_core.data.errors import DatasetError
from keyseg_core.data.io import read_json

KEYWORD_FILE = Path("explanatory_key") / "keyword_outputs.json"  # relative to <root>/reason_seg/ReasonSeg


@dataclass(frozen=True)
class KeywordEntry:
    query: str
    outputs: str
    image: str
    json: str
    keyword: str

    @property
    def stem(self) -> str:
        return Path(self.image).stem


def read_keyword_file(path: Path) -> dict[str, KeywordEntry]:
    """stem -> entry. Duplicate stems with different keywords are an error, not a silent pick."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetError(path, "-", "bad_keyword_file", "expected a JSON list of entries")
    entries: dict[str, KeywordEntry] = {}
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not item.get("image") or "keyword" not in item:
            raise DatasetError(path, i, "bad_keyword_entry", "entry needs 'image' and 'keyword'")
        keyword = str(item["keyword"]).strip()
        if not keyword:
            raise DatasetError(path, i, "empty_keyword", f"empty keyword for {item['image']}")
        image = str(item["image"])
        entry = KeywordEntry(
            query=str(item.get("query", "")),
            outputs=str(item.get("outputs", "")),
            image=image,
            json=str(item.get("json") or Path(image).with_suffix(".json").name),
            keyword=keyword,
        )
        previous = entries.get(entry.stem)
        if previous is not None and previous.keyword != keyword:
            raise DatasetError(
                path,
                i,
                "conflicting_keyword",
                f"{image}: keyword '{keyword}' conflicts with earlier '{previous.keyword}'",
            )
        entries[entry.stem] = entry
    return entries


def write_keyword_file(path: Path, entries: list[KeywordEntry]) -> None:
    """Write atomically, sorted by image name so reruns give byte-identical files."""
    rows = [asdict(e) for e in sorted(entries, key=lambda e: e.image)]
    atomic_write_json(path, rows)
