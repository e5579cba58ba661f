"""Atomic file writes: a temporary file in the same folder, fsync, then rename.

Readers and a crash never see a half-written file, and an existing file is only replaced whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the whole file at a temporary path beside `path`, which then replaces it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, data: Any, *, sort_keys: bool = False) -> None:
    atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=2, sort_keys=sort_keys) + "\n")


def save_report(path: str | Path | None, report: Any) -> None:
    """A benchmark's or evaluation's `--json` output: written atomically and said on stdout; no path, no file."""
    if path:
        atomic_write_json(path, report)
        print(f"wrote {path}")
