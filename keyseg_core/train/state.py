"""Training checkpoints: a step directory written atomically, rotated, and found again on resume.

    <output_dir>/checkpoints/step_000500/
        model/                  a keyseg checkpoint (save_checkpoint): eval/predict load it directly
        trainer_state.json      step, samples consumed (the data position), config digest
        optimizer.pt            AdamW state; loaded with torch.load(weights_only=True)  [ddp]
        engine/                 DeepSpeed/FSDP optimizer shards in the engine's own format [sharded]
        rng_rank<r>.safetensors torch CPU/CUDA, numpy and Python RNG states of rank r

The directory is assembled under a temporary name and renamed when complete, so a crash mid-save
leaves the previous checkpoint as the newest one. The learning-rate schedule is a pure function of
the step, so restoring the step restores the scheduler.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

STEP_DIR = re.compile(r"^step_(\d{6,})$")
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
MODEL_DIR = "model"
ENGINE_DIR = "engine"


@dataclass
class TrainerState:
    step: int  # optimizer steps completed
    consumed: int  # samples consumed by all ranks together: the data position
    config_digest: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n"


def step_dir(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step_{step:06d}"


def partial_dir(checkpoints: Path, step: int) -> Path:
    """Where a save is assembled; a fixed name so every rank finds it without communication."""
    return checkpoints / f".step_{step:06d}.partial"


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Finished step directories, oldest first (partial ones are never listed)."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir()
             if (m := STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = complete_checkpoints(checkpoints)
    return found[-1] if found else None


def rotate(checkpoints: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints; returns the deleted ones."""
    old = complete_checkpoints(checkpoints)[:-keep_last]
    for path in old:
        shutil.rmtree(path)
    return old


def save_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_FILE)


def load_optimizer(optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Only tensors, numbers, strings and containers are accepted (no arbitrary unpickling)."""
    state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state)


def save_rng(folder: Path, rank: int) -> None:
    """torch (CPU and every CUDA device), numpy and Python RNG states as safetensors + metadata."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np_keys.astype(np.int64))
    py_version, py_internal, py_gauss = random.getstate()
    tensors["python_internal"] = torch.tensor(py_internal, dtype=torch.int64)
    meta = {"numpy": json.dumps([np_name, np_pos, np_has_gauss, np_gauss]), "python": json.dumps([py_version, py_gauss])}
    save_file(tensors, str(folder / f"rng_rank{rank}.safetensors"), metadata=meta)


def load_rng(folder: Path, rank: int) -> bool:
    """Restore this rank's RNG states; False when the file is absent (e.g. another node's disk)."""
    path = folder / f"rng_rank{rank}.safetensors"
    if not path.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    torch.set_rng_state(tensors["torch_cpu"])
    cuda_keys = sorted((k for k in tensors if k.startswith("torch_cuda_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    cuda = [tensors[k] for k in cuda_keys]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    np_name, np_pos, np_has_gauss, np_gauss = json.loads(meta["numpy"])
    np.random.set_state((np_name, tensors["numpy_keys"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    py_version, py_gauss = json.loads(meta["python"])
    random.setstate((py_version, tuple(int(x) for x in tensors["python_internal"].tolist()), py_gauss))
    return True


def read_state(folder: Path) -> TrainerState:
    path = folder / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TrainerState(step=int(data["step"]), consumed=int(data["consumed"]), config_digest=str(data["config_digest"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable trainer state ({exc})") from exc
