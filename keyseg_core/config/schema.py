"""Config schema machinery: fields that carry their help text, and dataclasses built from mappings
with every key checked (unknown, missing, mistyped: the error names the dotted key path).

Every config class in keyseg (model, stage-1 and stage-2 training) is a dataclass whose fields are
made with `help_field`, built by `build_dataclass`; `--help`-style listings read the same metadata.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import field
from typing import Any, Literal


def help_field(text: str, **kw: Any) -> Any:
    """A dataclass field with its help text (`metadata["help"]`)."""
    return field(metadata={"help": text}, **kw)


def build_dataclass(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a mapping: nested dataclasses, lists of them, and leaf type checks.

    Unknown, missing and mistyped keys and `__post_init__` errors all name the dotted key path.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; "
                         f"valid keys here: {', '.join(sorted(fields))}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing config key(s) {', '.join(where + k for k in missing)}")
    kwargs = {}
    for name, value in data.items():
        key_path = where + name
        hint = hints[name]
        item = typing.get_args(hint)[0] if typing.get_origin(hint) is list and typing.get_args(hint) else None
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_dataclass(hint, value, key_path)
        elif item is not None and dataclasses.is_dataclass(item):
            if not isinstance(value, list):
                raise ValueError(f"{key_path}: expected a list, got {type(value).__name__}")
            kwargs[name] = [build_dataclass(item, v, f"{key_path}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[name] = check_type(value, hint, key_path)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{where}{exc}") from exc


def check_type(value: Any, hint: Any, path: str) -> Any:
    """Shallow type check of a leaf value against its annotation."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        for arg in args:
            try:
                return check_type(value, arg, path)
            except ValueError:
                continue
        raise ValueError(f"{path}: {value!r} does not match {hint}")
    if hint is type(None):
        if value is None:
            return None
        raise ValueError(f"{path}: expected null, got {value!r}")
    if origin is Literal:
        if value in args:
            return value
        raise ValueError(f"{path}: {value!r} is not one of {', '.join(map(repr, args))}")
    if hint is Any:
        return value
    base = origin or hint
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base is int and isinstance(value, bool):
        raise ValueError(f"{path}: expected int, got bool")
    if not isinstance(value, base):
        raise ValueError(f"{path}: expected {getattr(base, '__name__', base)}, got {type(value).__name__} {value!r}")
    if base is list and args:
        return [check_type(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    return value
