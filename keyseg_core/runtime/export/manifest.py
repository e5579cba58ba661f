"""manifest.json of an export directory: what each graph takes and returns, and how it was checked.

Consumers (the onnxruntime backend, a TensorRT build script on the robot) read shapes, dtypes and
dynamic axes from here instead of guessing them; a manifest of another format version is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from keyseg_core.atomic import atomic_write_json

MANIFEST_FILE = "manifest.json"
FORMAT = "keyseg-onnx"
FORMAT_VERSION = 1


def write_manifest(directory: Path, manifest: dict[str, Any]) -> Path:
    """Write manifest.json through a temporary file and a rename, so a reader never sees half of it."""
    path = directory / MANIFEST_FILE
    atomic_write_json(path, manifest, sort_keys=True)
    return path


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Load and check an export directory's manifest; every graph file it names must exist."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a keyseg ONNX export ({MANIFEST_FILE} is missing)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format {manifest.get('format')!r} v{manifest.get('format_version')} "
                         f"is not {FORMAT} v{FORMAT_VERSION}; re-export with `keyseg export`")
    for name, graph in manifest["graphs"].items():
        for file in (graph["file"], graph.get("data_file")):
            if file and not (directory / file).is_file():
                raise FileNotFoundError(f"{directory}: graph '{name}' file {file} is missing")
    return manifest
