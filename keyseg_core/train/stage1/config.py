"""Configuration of `keyseg pretrain`: validated dataclasses loaded from YAML, errors naming the key."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from keyseg_core.config.files import deep_merge, load_config
from keyseg_core.config.model import KeySegConfig
from keyseg_core.config.schema import help_field
from keyseg_core.train.optim import OptimizerConfig, ScheduleConfig
from keyseg_core.weights.resolve import named_config


@dataclass
class PromptMix:
    """How often each object instance is prompted by each kind (independent probabilities): SAM's own
    point and box prompts, and the instance's category (a learned embedding), so the decoder learns
    both "this one" and "the X". An instance can be segmented once per kind drawn."""

    point: float = help_field("probability of a prompt by one point inside the object", default=0.5)
    box: float = help_field("probability of a prompt by the object's box, jittered by 5% of its size", default=0.5)
    category: float = help_field("probability of a prompt by the object's category", default=1.0)
    absent: float = help_field("probability, per scene, of one more category prompt for a category the scene does not "
                          "hold, whose target is the empty mask: SAM learns to answer 'not here', the presence "
                          "signal of a query about an object that is not in view", default=0.0)

    def __post_init__(self) -> None:
        chances = dataclasses.asdict(self)
        if any(not 0 <= p <= 1 for p in chances.values()) or not any((self.point, self.box, self.category)):
            raise ValueError(f"probabilities must be in [0, 1] and point, box, category not all 0, got {chances}")


@dataclass
class BasesLoss:
    """Weights of the three stage-1 losses."""

    prompt_mask: float = help_field("BCE + Dice of every prompted instance mask", default=1.0)
    sam_category: float = help_field("cross-entropy of each SAM embedding cell's category mix", default=1.0)
    vision_category: float = help_field("cross-entropy of each vision-tower patch's category mix", default=1.0)

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            if value < 0:
                raise ValueError(f"{name}: weight {value} must be >= 0")


@dataclass
class BasesConfig:
    """Stage 1 of a model with no pretrained vision tower or SAM: pretrain both on generated scenes."""

    model: str | dict[str, Any] = help_field("registry name (keyseg-tiny) or a KeySegConfig mapping")
    model_overrides: dict[str, Any] = help_field("deep-merged into the model config", default_factory=dict)
    scene_seed: int = help_field("seed of the generated training scenes (train split: train backgrounds only)", default=100)
    scene_size: list[int] = help_field("scene width and height in pixels", default_factory=lambda: [320, 240])
    objects: list[int] = help_field("objects per scene, min and max", default_factory=lambda: [3, 6])
    max_steps: int = help_field("optimizer steps", default=3000)
    batch_size: int = help_field("scenes per step", default=8)
    max_grad_norm: float = help_field("gradient clipping norm; 0 disables", default=1.0)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    prompts: PromptMix = field(default_factory=PromptMix)
    loss: BasesLoss = field(default_factory=BasesLoss)
    seed: int = help_field("seed of the prompt sampling and of the auxiliary heads", default=42)
    output_dir: str = help_field("run directory: checkpoints/, metrics.csv, final/", default="runs/bases")
    save_every: int = help_field("checkpoint every N steps (and at the end)", default=250)
    keep_last: int = help_field("checkpoints kept", default=2)
    log_every: int = help_field("console line every N steps", default=50)
    device: str = help_field("'cpu', 'cuda' or 'cuda:N' (checked when training starts; --device overrides)", default="cpu")
    precision: Literal["fp32", "bf16"] = help_field(
        "'bf16' = bfloat16 autocast of the forward passes (weights, optimiser and losses stay float32)",
        default="fp32")
    pool: int = help_field("0: every step draws new scenes; N: scenes 0..N-1 are prepared once and each step draws "
                      "batch_size of them with random horizontal flips (keyseg_core/train/stage1/scene_source.py)", default=0)
    workers: int | None = help_field("processes preparing scenes (null: one per spare core, at most 7); "
                                "changes speed only, never which scenes a step sees", default=None)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "save_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 1")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: '{self.precision}' is not 'fp32' or 'bf16'")
        if not (self.device == "cpu" or self.device == "cuda" or
                (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            raise ValueError(f"device: '{self.device}' is not 'cpu', 'cuda' or 'cuda:N'")
        if self.pool < 0:
            raise ValueError(f"pool: {self.pool} must be >= 0 (0 = no pool)")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers: {self.workers} must be >= 0 (or null)")
        if len(self.scene_size) != 2 or min(self.scene_size) < 64:
            raise ValueError(f"scene_size: {self.scene_size} must be [width, height], each >= 64")
        if len(self.objects) != 2 or not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"objects: {self.objects} must be [min, max] with 1 <= min <= max")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm: {self.max_grad_norm} must be >= 0")
        trainable = self.model_config().trainable
        frozen = [n for n in ("vision_tower", "sam_image_encoder", "sam_prompt_encoder") if not getattr(trainable, n)]
        if frozen:
            raise ValueError(f"model: trainable.{', trainable.'.join(frozen)} must be true: stage 1 trains these parts, "
                             "and only trainable parts are carried into stage 2 and saved")

    def torch_device(self) -> torch.device:
        """The device to train on, refused with the setting's name where this machine lacks it."""
        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise ValueError(f"device: '{self.device}' but this torch ({torch.__version__}) sees no CUDA device")
            index = int(self.device[5:] or 0)
            if index >= torch.cuda.device_count():
                raise ValueError(f"device: '{self.device}' but only {torch.cuda.device_count()} CUDA device(s) exist")
            if self.precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise ValueError(f"precision: 'bf16' but {torch.cuda.get_device_name(index)} has no bfloat16 support; "
                                 "use fp32")
        return torch.device(self.device)

    def model_config(self) -> KeySegConfig:
        base = named_config(self.model).to_dict() if isinstance(self.model, str) else self.model
        try:
            return KeySegConfig.from_dict(deep_merge(base, self.model_overrides))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model / model_overrides: {exc}") from exc

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> BasesConfig:
        """Load YAML/JSON (following `base:`), apply `key.sub=value` overrides, validate."""
        return load_config(cls, path, overrides)
