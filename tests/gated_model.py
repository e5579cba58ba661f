"""A tiny codebook model with a category detector whose every patch has fixed logits: what it sees
is set by the test (tests of the category gate, in keyseg_core and over DDS)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

NAMES = ["bed", "cup", "dog"]


def write_gated_checkpoint(path: Path, patch_logits: list[float], tiles: float = 0.0,
                           calibration: tuple[float, float] = (1.0, 0.0)) -> torch.Tensor:
    """Save a config:tiny model with a 3-prompt codebook at `path` and a detector whose patch logits
    are `patch_logits` (background, bed, cup, dog), looking at `tiles` with `calibration`; returns the
    codebook."""
    from keyseg_core.modeling.build import build_model, registry_config
    from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
    from keyseg_core.weights.checkpoint import save_checkpoint

    config = registry_config("tiny")
    config.fusion = dataclasses.replace(config.fusion, codebook=len(NAMES))
    model, _ = build_model(config)
    save_checkpoint(model, path)
    detector = CategoryDetector(model.llava.config.vision_config, NAMES, tiles=tiles, calibration=calibration)
    with torch.no_grad():
        detector.patch.weight.zero_()
        detector.patch.bias.copy_(torch.tensor(patch_logits))
    detector.save(Path(path) / DETECTOR_FILE)
    return model.fusion.codebook.detach().clone()
