"""The one place a model name becomes a config or a model.

A name is one of:
  config:<registry name>   a registry config (modeling/build.py), randomly initialised
  a .json/.yaml file       a config file, randomly initialised
  a checkpoint folder      a keyseg checkpoint (config.json + trainable.safetensors + meta.json)
  org/name                 a checkpoint on the Hugging Face hub, downloaded to the hub cache
Training configs (`model:` of a TrainConfig) also take a bare registry name (`named_config`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from keyseg_core.config.model import KeySegConfig
from keyseg_core.modeling.build import MODEL_REGISTRY, build_model, registry_config
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.processor import KeySegProcessor
from keyseg_core.weights.checkpoint import CONFIG_FILE, META_FILE, checkpoint_config, load_checkpoint

CONFIG_PREFIX = "config:"
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def untrained_config(name: str) -> KeySegConfig | None:
    """The config of a name that stands for no trained weights ('config:<name>' or a config file);
    None for a checkpoint folder or a hub id."""
    if name.startswith(CONFIG_PREFIX):
        return registry_config(name[len(CONFIG_PREFIX):])
    if Path(name).suffix in CONFIG_SUFFIXES and Path(name).is_file():
        return KeySegConfig.from_file(name)
    return None


def named_config(name: str) -> KeySegConfig:
    """The config of any local name: a registry name (bare or 'config:'), a config file, or the
    config.json of a checkpoint folder (what training starts from)."""
    if name in MODEL_REGISTRY:
        return registry_config(name)
    config = untrained_config(name)
    if config is not None:
        return config
    path = Path(name)
    if (path / CONFIG_FILE).is_file():
        return checkpoint_config(path)
    if path.is_file():
        return KeySegConfig.from_file(path)
    raise ValueError(f"model: '{name}' is not a registry name ({', '.join(MODEL_REGISTRY)}), "
                     "a checkpoint folder or a config file")


def checkpoint_dir(name: str) -> Path:
    """A local checkpoint directory, or a hub repo id downloaded to the hub cache."""
    path = Path(name)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a keyseg checkpoint (no {CONFIG_FILE})")
        return path
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model '{name}' is neither a checkpoint directory nor a hub id (org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; one clear message
        raise RuntimeError(f"model '{name}': could not download from the hub ({exc})") from exc


def load_model(name: str, dtype: torch.dtype, device: torch.device, check_bases: bool = True
               ) -> tuple[KeySegModel, KeySegProcessor, bool]:
    """(model, processor, untrained) of a name: built from a config, or loaded from a checkpoint
    (its frozen bases checked against its fingerprint unless `check_bases` is False)."""
    config = untrained_config(name)
    if config is not None:
        return *build_model(config, dtype, device), True
    directory = checkpoint_dir(name)
    net, proc = load_checkpoint(directory, dtype, device, check_frozen=check_bases)
    return net, proc, not json.loads((directory / META_FILE).read_text()).get("train_steps")
