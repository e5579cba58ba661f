"""keyseg_core: the KeySeg model, its predictor, data, training and export. Never imports ROS.

The public names below are imported lazily so that `keyseg --help` and the ROS node start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "KeySegConfig": "config.model",
    "FusionConfig": "config.model",
    "KeySegModel": "modeling.keyseg",
    "KeySegProcessor": "modeling.processor",
    "build_model": "modeling.build",
    "registry_config": "modeling.build",
    "MODEL_REGISTRY": "modeling.build",
    "save_checkpoint": "weights.checkpoint",
    "load_checkpoint": "weights.checkpoint",
    "Predictor": "runtime.predictor",
    "Reasoner": "inference.reasoner",
    "Reasoning": "inference.reasoner",
    "Segmenter": "inference.segmenter",
    "StreamingSegmenter": "inference.stream",
    "Prediction": "inference.results",
    "KeywordCandidate": "modeling.keyword_head",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'keyseg_core' has no attribute '{name}'")
