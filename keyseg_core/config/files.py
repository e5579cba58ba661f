"""Config files: YAML or JSON, layered with `base:` and `--set key.path=value` overrides.

One mechanism for every config file (model configs, stage-1 and stage-2 training): a file may name a
`base:` file (relative to itself) that it is merged over; mappings merge key by key, a `fusion` or
`loss` section follows the preset rule of config/presets.py (the later layer wins).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from keyseg_core.config.presets import PRESET_SECTIONS, layer_section
from keyseg_core.config.schema import build_dataclass


def load_config(cls: type, path: str | Path, overrides: list[str] | None = None) -> Any:
    """A config dataclass from a file (following `base:`) with `key.sub=value` overrides; errors name
    the file and the offending key."""
    path = Path(path)
    data = load_mapping(path)
    for item in overrides or []:
        apply_override(data, item)
    try:
        return build_dataclass(cls, data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_mapping(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one config file as a mapping, merged over its `base:` file (relative to it)."""
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"{path}: 'base' files form a cycle")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: base: expected a file path, got {base!r}")
    return deep_merge(load_mapping(path.parent / base, _seen + (path,)), data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced. A `fusion` or `loss`
    mapping follows the preset rule of `keyseg_core.config.presets.layer_section` (the later layer wins)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key in PRESET_SECTIONS:
                out[key] = layer_section(key, out[key], copy.deepcopy(value))
            else:
                out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(data: dict[str, Any], item: str) -> None:
    """'a.b.c=value' (value parsed as YAML; list items by index: 'data.0.ratio=2') into `data` in place.

    A value set inside a `fusion` or `loss` mapping is one more config layer (`layer_section`):
    `--set model_overrides.loss.bce=3` keeps the file's preset's other weights.
    """
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted.strip():
        raise ValueError(f"--set '{item}': expected key.path=value")
    value = yaml.safe_load(raw)
    parts = dotted.strip().split(".")
    *path, last = parts
    node: Any = data
    for i, part in enumerate(path):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"--set '{item}': '{'.'.join(parts[:i])}' has no item {part}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part in PRESET_SECTIONS and i == len(path) - 1:
                section = node.get(part) if isinstance(node.get(part), dict) else {}
                node[part] = layer_section(part, section, {last: value})
                return
            node = node.setdefault(part, {})
        else:
            raise ValueError(f"--set '{item}': '{'.'.join(parts[:i])}' is not a mapping or list")
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ValueError(f"--set '{item}': '{'.'.join(path)}' has no item {last}")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"--set '{item}': '{'.'.join(path)}' is not a mapping or list")
