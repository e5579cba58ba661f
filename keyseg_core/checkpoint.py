"""Save and load KeySeg checkpoints: trainable weights as safetensors + the config that names the bases.

A checkpoint directory holds:
  config.json          the full KeySegConfig (names the LLM / vision / SAM sources and seeds)
  trainable.safetensors every parameter that trains (LoRA, new token rows, fusion, keyword head, decoder)
  meta.json            format version, parameter counts, and a fingerprint of the frozen weights
Frozen weights come from the named bases (or their seeds). The fingerprint makes a load fail loudly
when the bases differ from those the checkpoint was saved with, instead of silently giving other
outputs. Saving writes a temporary directory and renames it, so an interrupted save loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .builder import build_model
from .config import KeySegConfig
from .model import KeySegModel
from .processor import KeySegProcessor

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "trainable.safetensors"
META_FILE = "meta.json"


def trainable_state_dict(model: KeySegModel) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def frozen_fingerprint(model: KeySegModel) -> str:
    """sha256 over names, shapes and float64 sums of the frozen parameters (cheap, order-stable).

    Sums are rounded to 8 significant digits: a GPU and a CPU add the same weights in different
    orders, and the last digits of a float64 sum may differ between them.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            h.update(f"{name}:{tuple(p.shape)}:{p.detach().double().sum().item():.8e};".encode())
    return h.hexdigest()


def save_checkpoint(model: KeySegModel, path: str | Path, *, overwrite: bool = False, extra: dict | None = None) -> Path:
    """Write a checkpoint directory atomically. Refuses to replace an existing one unless `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.config.to_json(tmp / CONFIG_FILE)
        state = trainable_state_dict(model)
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "keyseg", "version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "trainable_parameters": sum(t.numel() for t in state.values()),
            "frozen_fingerprint": frozen_fingerprint(model),
            "torch_version": torch.__version__,
            **(extra or {}),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_checkpoint(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", check_frozen: bool = True
) -> tuple[KeySegModel, KeySegProcessor]:
    """Rebuild the model from config.json and load its trainable weights (safetensors only)."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a keyseg checkpoint ({CONFIG_FILE} is missing)")
    config = KeySegConfig.from_file(path / CONFIG_FILE)
    model, processor = build_model(config, dtype=torch.float32, device="cpu")
    load_weights_into(model, path, check_frozen=check_frozen)
    return model.to(device=device, dtype=dtype), processor


def load_weights_into(model: KeySegModel, path: str | Path, check_frozen: bool = True) -> dict:
    """Load a checkpoint's trainable weights into an already-built model; returns its meta.json.

    With `check_frozen`, the model's frozen weights must match the fingerprint saved with them.
    """
    path = Path(path)
    for name in (WEIGHTS_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a keyseg checkpoint ({name} is missing)")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / META_FILE}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
    if check_frozen and meta.get("frozen_fingerprint") != frozen_fingerprint(model):
        raise ValueError(
            f"{path}: the frozen base weights differ from those this checkpoint was saved with "
            f"(saved with torch {meta.get('torch_version')}, now {torch.__version__}); check the base "
            "model sources in config.json"
        )
    load_trainable(model, load_file(str(path / WEIGHTS_FILE)), str(path / WEIGHTS_FILE))
    return meta


def load_trainable(model: KeySegModel, state: dict[str, torch.Tensor], where: str) -> None:
    """Copy trainable weights in; any missing, unexpected or mis-shaped key is an error naming it."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            f"{where}: keys do not match the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"{where}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)
