"""The SAM segmenter of a model name, without building the LLM when the name is a config.

A registry config or config file builds only SAM, seeded as `build_model` seeds it, so exporting SAM
of a 7B configuration needs no 7B of memory; checkpoints load in full (their mask decoder is trained).
"""

from __future__ import annotations

from typing import Any

import torch

from keyseg_core.modeling.build import seeded_sam_segmenter
from keyseg_core.modeling.sam import SamSegmenter
from keyseg_core.weights.resolve import load_model, untrained_config
from keyseg_core.weights.shipped import shipped_checkpoint


def load_segmenter(model: str | None) -> tuple[SamSegmenter, dict[str, Any]]:
    """(segmenter, manifest info) for a checkpoint dir, hub id, 'config:<name>', config file, or the shipped model."""
    name = model or str(shipped_checkpoint())
    config = untrained_config(name)
    if config is not None:
        sam = seeded_sam_segmenter(config)
    else:
        net, _, _ = load_model(name, torch.float32, torch.device("cpu"))
        sam, config = net.sam, net.config
    info = {"model": name, "config_name": config.name, "sam_size": config.sam.size}
    return sam.eval(), info
