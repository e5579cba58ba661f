"""keyseg_core: the KeySeg model, its predictor, data, training and export. Never imports ROS.

The public names below are imported lazily so that `keyseg --help` and the ROS node start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "KeySegConfig": "config",
    "FusionConfig": "config",
    "KeySegModel": "model",
    "KeySegProcessor": "processor",
    "build_model": "builder",
    "registry_config": "builder",
    "MODEL_REGISTRY": "builder",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "Predictor": "predictor",
    "Reasoner": "reasoner",
    "Reasoning": "reasoner",
    "Segmenter": "segmenter",
    "StreamingSegmenter": "streaming",
    "Prediction": "prediction",
    "KeywordCandidate": "prediction",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'keyseg_core' has no attribute '{name}'")
