"""Named values for a config section (`fusion.preset`, `loss.preset`) and how config layers merge them.

Two ways one config builds on another, with one rule between them: a file's `base:` layers whole
files (config/files.py), a preset names a row of switch values within one section. In both, what a
later layer sets explicitly wins, and a switch set beside a preset must agree with it (or the error
names both keys): nothing is silently overridden.
"""

from __future__ import annotations

from typing import Any

FUSION_PRESETS: dict[str, dict[str, bool]] = {
    # paper Table 3 / Table 4 rows, by name
    "seg_only": dict(use_key=False, cross_attn=False, self_attn=False, residual=False),
    "seg_sa": dict(use_key=False, cross_attn=False, self_attn=True, residual=False),
    "keyseg": dict(use_key=True, cross_attn=True, self_attn=True, residual=True),
    "ca_only": dict(use_key=True, cross_attn=True, self_attn=False, residual=False),
    "sa_only": dict(use_key=True, cross_attn=False, self_attn=True, residual=False),
    "ca_sa_no_residual": dict(use_key=True, cross_attn=True, self_attn=True, residual=False),
}
LOSS_PRESETS: dict[str, dict[str, float]] = {
    "paper": dict(ce=1.0, bce=1.0, dice=1.0, keyword=1.0),
    "lisa": dict(ce=1.0, bce=2.0, dice=0.5, keyword=1.0),
}
# section -> (its presets, the row whose values unset switches take when no preset is named)
PRESET_SECTIONS: dict[str, tuple[dict[str, dict[str, Any]], str]] = {
    "fusion": (FUSION_PRESETS, "keyseg"),
    "loss": (LOSS_PRESETS, "paper"),
}


def resolve_preset(section: str, config: Any) -> None:
    """Fill a section's unset switches from its preset (or the default row), in place.

    The rule for every config: a switch set explicitly wins over the default row; a switch set in the
    same mapping as a preset must agree with it, else the error names both keys (nothing is silently
    overridden). Merging config layers (`layer_section`) applies the same rule across files.
    """
    presets, default = PRESET_SECTIONS[section]
    if config.preset is not None and config.preset not in presets:
        raise ValueError(f"preset: '{config.preset}' is not one of {sorted(presets)}")
    row = presets[config.preset or default]
    for key, value in row.items():
        mine = getattr(config, key)
        if mine is None:
            setattr(config, key, value)
        elif config.preset is not None and mine != value:
            raise ValueError(
                f"{key}: {mine!r} conflicts with {section}.preset '{config.preset}', which sets "
                f"{section}.{key} = {value!r}; set {section}.{key} or {section}.preset, not both "
                f"(or {section}.preset: null to keep your value)"
            )


def layer_section(section: str, base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Put a later config layer's `fusion`/`loss` mapping over an earlier one's; the later layer's keys win.

    A preset in the later layer replaces the earlier layer's switches. A switch set there without a
    preset first spells the earlier layer's preset out as explicit values (so its other values stay),
    then changes that switch: `{preset: lisa}` under `{bce: 3.0}` gives lisa's weights with bce 3.0.
    """
    presets, default = PRESET_SECTIONS[section]
    switches = presets[default].keys()
    out = dict(base)
    if override.get("preset") is not None:
        for key in switches:
            out.pop(key, None)
    elif "preset" in override or any(key in override for key in switches):
        name = out.get("preset")
        if name in presets:
            for key, value in presets[name].items():
                out.setdefault(key, value)
        out["preset"] = None
    out.update(override)
    return out
