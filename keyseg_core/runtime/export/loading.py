"""The SAM segmenter of a model name, without building the LLM when the name is a config.

A registry config or config file builds only SAM, seeded as `build_model` seeds it, so exporting SAM
of a 7B configuration needs no 7B of memory; checkpoints load in full (their mask decoder is trained).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from keyseg_core.modeling.build import registry_config
from keyseg_core.config.model import KeySegConfig
from keyseg_core.inference.predictor import CONFIG_PREFIX, Predictor
from keyseg_core.modeling.sam import SamSegmenter, build_sam
from keyseg_core.weights.shipped import shipped_checkpoint


def load_segmenter(model: str | None) -> tuple[SamSegmenter, dict[str, Any]]:
    """(segmenter, manifest info) for a checkpoint dir, hub id, 'config:<name>', config file, or the shipped model."""
    name = model or str(shipped_checkpoint())
    config = None
    if name.startswith(CONFIG_PREFIX):
        config = registry_config(name[len(CONFIG_PREFIX):])
    elif Path(name).suffix in (".json", ".yaml", ".yml") and Path(name).is_file():
        config = KeySegConfig.from_file(name)
    if config is not None:
        with torch.random.fork_rng():
            torch.manual_seed(config.backbone.seed + 2)  # builder.build_model's SAM seed
            sam = SamSegmenter(build_sam(config.sam), config.sam.image_size)
    else:
        predictor = Predictor.from_pretrained(name)
        sam, config = predictor.model.sam, predictor.model.config
    info = {"model": name, "config_name": config.name, "sam_size": config.sam.size}
    return sam.eval(), info
