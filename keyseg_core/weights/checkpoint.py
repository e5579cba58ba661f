"""Save and load KeySeg checkpoints: trainable weights as safetensors + the config that names the bases.

A checkpoint directory holds:
  config.json          the full KeySegConfig (names the LLM / vision / SAM sources and seeds)
  trainable.safetensors every parameter that trains (LoRA, new token rows, fusion, keyword head, decoder)
  meta.json            format version, parameter counts, and a fingerprint of the frozen weights
Frozen weights come from the named bases (or their seeds). The fingerprint makes a load fail loudly
when the bases differ from those the checkpoint was saved with, instead of silently giving other
outputs; it does not depend on the dtype (version 2), so a checkpoint trained in float32 loads
straight into bfloat16 on a GPU without a float32 copy. Saving writes a temporary directory and
renames it, so an interrupted save loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from keyseg_core.config.model import KeySegConfig
from keyseg_core.modeling.build import build_model
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.processor import KeySegProcessor

FORMAT_VERSION = 1
FINGERPRINT_VERSION = 2
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "trainable.safetensors"
META_FILE = "meta.json"


# module prefixes wrappers insert in parameter names (FSDP's layer units, activation checkpointing,
# torch.compile); a checkpoint names parameters as the plain model does
WRAPPER_PREFIXES = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module|_orig_mod)\.")


def plain_name(name: str) -> str:
    return WRAPPER_PREFIXES.sub("", name)


def trainable_state_dict(model: KeySegModel) -> dict[str, torch.Tensor]:
    return {plain_name(n): p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def in_parts(name: str, parts: list[str] | None) -> bool:
    """Whether a plain parameter name lies in one of `parts` ('sam.', 'vision_tower.'; None = all)."""
    return parts is None or any(name.startswith(p) or f".{p}" in name for p in parts)


def frozen_fingerprint(model: KeySegModel, version: int = FINGERPRINT_VERSION, parts: list[str] | None = None) -> str:
    """sha256 over names, shapes and float64 sums of the frozen parameters (cheap, order-stable).

    Version 2 sums the values rounded to bfloat16 and keeps 7 significant digits, so float32,
    bfloat16 and float16 builds of the same bases agree; the rows of keyseg's own tokens ([SEG],
    [KEY], <image>: derived from the base table, and trained) are left out of the embedding tables.
    Version 1 (older checkpoints) summed the float32 values to 8 digits. `parts` limits it to the
    parameters of some parts (a stage-1 checkpoint vouches for its tower and SAM only, not for an LLM
    it never used).
    """
    skip = sorted({model.token_ids.seg, model.token_ids.key, model.token_ids.image})
    vocab = model.llava.get_input_embeddings().weight.shape[0]
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            continue
        name, x = plain_name(name), p.detach()
        if not in_parts(name, parts):
            continue
        if version == 1:
            h.update(f"{name}:{tuple(p.shape)}:{x.double().sum().item():.8e};".encode())
            continue
        if x.ndim == 2 and x.shape[0] == vocab:
            keep = torch.ones(vocab, dtype=torch.bool, device=x.device)
            keep[skip] = False
            x = x[keep]
        total = x.to(torch.bfloat16).sum(dtype=torch.float64).item()
        h.update(f"{name}:{tuple(p.shape)}:{total:.6e};".encode())
    return h.hexdigest()


def save_checkpoint(model: KeySegModel, path: str | Path, *, overwrite: bool = False, extra: dict | None = None,
                    keep: Callable[[str], bool] | None = None, parts: list[str] | None = None) -> Path:
    """Write a checkpoint directory atomically. Refuses to replace an existing one unless `overwrite`.

    parts: a checkpoint of some parts only (stage-1 bases: ['vision_tower.', 'sam.']); its fingerprint
    covers only their frozen tensors, so any model with the same parts can start from it.
    keep: save only the trainable tensors whose name it accepts (a partial checkpoint, e.g. stage-1
    bases that a later run loads with `init_checkpoint`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.config.to_json(tmp / CONFIG_FILE)
        state = {n: t for n, t in trainable_state_dict(model).items() if keep is None or keep(n)}
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"format": "keyseg", "version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "trainable_parameters": sum(t.numel() for t in state.values()),
            "frozen_fingerprint": frozen_fingerprint(model, parts=parts),
            **({"fingerprint_parts": parts} if parts else {}),
            "fingerprint_version": FINGERPRINT_VERSION,
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


def read_meta(path: str | Path) -> dict:
    """A checkpoint's meta.json, checked for its format version."""
    path = Path(path)
    for name in (WEIGHTS_FILE, META_FILE):
        if not (path / name).is_file():
            raise FileNotFoundError(f"{path}: not a keyseg checkpoint ({name} is missing)")
    meta = json.loads((path / META_FILE).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path / META_FILE}: format_version {meta.get('format_version')} is not {FORMAT_VERSION}")
    return meta


def resolve_relative(config: KeySegConfig, folder: str | Path) -> KeySegConfig:
    """Base sources written as './...' are relative to the checkpoint folder (a converted LISA keeps
    its bases beside its weights, so the folder can be moved); resolved in place and returned."""
    def resolve(value: str | None) -> str | None:
        return str(Path(folder) / value) if isinstance(value, str) and value.startswith("./") else value

    b = config.backbone
    b.mllm, b.llm, b.vision, b.tokenizer = resolve(b.mllm), resolve(b.llm), resolve(b.vision), resolve(b.tokenizer)
    config.sam.weights = resolve(config.sam.weights)
    return config


def checkpoint_config(path: str | Path) -> KeySegConfig:
    """A checkpoint folder's KeySegConfig with its relative base paths resolved."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a keyseg checkpoint ({CONFIG_FILE} is missing)")
    return resolve_relative(KeySegConfig.from_file(path / CONFIG_FILE), path)


def load_checkpoint(
    path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu", check_frozen: bool = True
) -> tuple[KeySegModel, KeySegProcessor]:
    """Rebuild the model from config.json in `dtype` on `device` and load its trainable weights.

    Only a checkpoint from before dtype-independent fingerprints, loaded with the check in another
    dtype, is built in float32 on the CPU first (its fingerprint is over float32 sums).
    """
    path = Path(path)
    config = checkpoint_config(path)
    legacy = check_frozen and read_meta(path).get("fingerprint_version", 1) == 1 and dtype != torch.float32
    model, processor = build_model(config, dtype=torch.float32 if legacy else dtype, device="cpu" if legacy else device)
    load_weights_into(model, path, check_frozen=check_frozen)
    return model.to(device=device, dtype=dtype), processor


def load_weights_into(model: KeySegModel, path: str | Path, check_frozen: bool = True, partial: bool = False) -> dict:
    """Load a checkpoint's trainable weights into an already-built model; returns its meta.json.

    With `check_frozen`, the model's frozen weights must match the fingerprint saved with them.
    With `partial` (starting a new model from another's weights), trainable parts the checkpoint
    lacks keep their fresh values and are listed under meta["fresh"]; anything else must match.
    """
    path = Path(path)
    meta = read_meta(path)
    version = meta.get("fingerprint_version", 1)
    parts = meta.get("fingerprint_parts")
    if check_frozen and meta.get("frozen_fingerprint") != frozen_fingerprint(model, version, parts):
        raise ValueError(
            f"{path}: the frozen base weights differ from those this checkpoint was saved with "
            f"(saved with torch {meta.get('torch_version')}, now {torch.__version__}); check the base "
            "model sources in config.json"
        )
    meta["fresh"] = load_trainable(model, load_file(str(path / WEIGHTS_FILE)), str(path / WEIGHTS_FILE), partial)
    return meta


def load_trainable(model: KeySegModel, state: dict[str, torch.Tensor], where: str, partial: bool = False) -> list[str]:
    """Copy trainable weights in; an unexpected or mis-shaped key, or (unless `partial`) a missing one,
    is an error naming it. Returns the trainable names the state did not hold."""
    params = {plain_name(n): p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if unexpected or (missing and not partial):
        raise ValueError(
            f"{where}: keys do not match the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if params[name].shape != tensor.shape:
                raise ValueError(f"{where}: {name} has shape {tuple(tensor.shape)}, model expects {tuple(params[name].shape)}")
            params[name].copy_(tensor)
    return missing
