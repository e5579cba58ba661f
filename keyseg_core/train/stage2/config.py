"""The training configuration: validated dataclasses loaded from YAML, errors naming the dotted key.

A config names the model (registry name or a full KeySegConfig mapping, plus `model_overrides` for
ablation switches), the data mixture, the optimiser, schedule, precision, accumulation, clipping,
seed, output/checkpoint policy, logging and the distributed backend. A file may start from another
with `base: other.yaml` (deep-merged, lists replaced), so each ablation row is a three-line file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from keyseg_core.weights.resolve import named_config
from keyseg_core.config.model import KEY_TOKEN, PRESET_SECTIONS, SEG_TOKEN, KeySegConfig, build_dataclass, layer_section
from keyseg_core.data.registry import DATASETS

KEYWORD_POLICIES = ("require", "optional", "category", "none")
BACKENDS = ("ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp")


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class DataSource:
    """One data set of the training mixture."""

    name: str = _help(f"reader: one of {', '.join(DATASETS)}, or a refer name like 'refcocog|umd|train'")
    root: str = _help("data root (holding reason_seg/, refer_seg/, ... as in docs/data.md)")
    split: str = _help("split to train on", default="train")
    ratio: float = _help("sampling weight in the mixture (LISA: sem 9, refer 3, vqa 3, reason 1)", default=1.0)
    label: str | None = _help("name of this source in logs and the mixture; defaults to `name`", default=None)
    keyword: Literal["require", "optional", "category", "none"] = _help(
        "where the [KEY] target comes from when the model uses [KEY]: 'require' = the sample's keyword, "
        "missing is an error (or a counted skip with --skip-bad); 'optional' = samples without one use the "
        "no-[KEY] answer; 'category' = the COCO category name (refer data); 'none' = never [KEY]",
        default="require",
    )
    keywords: str | None = _help("ReasonSeg only: keyword file (default: ReasonSeg/explanatory_key/keyword_outputs.json)", default=None)
    questions: Literal["plain", "lisa"] = _help(
        "'plain' = the reader's query as the question and the model's answer templates; 'lisa' = LISA's "
        "question lists (short for classes, refer sentences and ReasonSeg phrases, long for ReasonSeg "
        "sentences) and, for samples without [KEY], LISA's answer list. Not used by vqa sources",
        default="plain",
    )
    options: dict[str, Any] = _help("extra reader arguments (unit, split_by, refs_path, image_dir, ...)", default_factory=dict)

    def __post_init__(self) -> None:
        base = self.name.split("|")[0]
        if base not in DATASETS:
            raise ValueError(f"name: unknown data set '{self.name}'; expected one of {', '.join(DATASETS)}")
        if not self.ratio > 0:
            raise ValueError(f"ratio: {self.ratio} must be > 0")
        if self.keyword not in KEYWORD_POLICIES:
            raise ValueError(f"keyword: '{self.keyword}' is not one of {', '.join(KEYWORD_POLICIES)}")
        if self.keyword == "category" and base == "reasonseg":
            raise ValueError("keyword: 'category' needs COCO-based data; ReasonSeg has no categories")
        if self.keywords is not None and base != "reasonseg":
            raise ValueError("keywords: a keyword file applies to ReasonSeg only")
        if base == "vqa" and self.keyword in ("category", "optional"):
            raise ValueError(f"keyword: '{self.keyword}' does not apply to vqa data, which has no [SEG] or [KEY]; "
                             "use 'none'")
        if self.questions not in ("plain", "lisa"):
            raise ValueError(f"questions: '{self.questions}' is not 'plain' or 'lisa'")

    @property
    def key(self) -> str:
        return self.label or self.name


@dataclass
class OptimizerConfig:
    """AdamW (LISA: lr 3e-4, betas (0.9, 0.95), no weight decay)."""

    lr: float = _help("peak learning rate", default=3e-4)
    betas: list[float] = _help("AdamW betas", default_factory=lambda: [0.9, 0.95])
    eps: float = _help("AdamW epsilon", default=1e-8)
    weight_decay: float = _help("decoupled weight decay (not applied to biases and norms)", default=0.0)
    lr_scale: dict[str, float] = _help(
        "learning-rate multipliers by parameter-name prefix (names in the KeySeg model, or in stage 1's "
        "vision_tower/sam/heads), e.g. {sam.: 0.0} keeps a stage-1 SAM as it is while still saving it; "
        "the longest matching prefix wins, and every prefix must match a trainable parameter",
        default_factory=dict)

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"lr: {self.lr} must be > 0")
        for prefix, scale in self.lr_scale.items():
            if not isinstance(prefix, str) or not prefix:
                raise ValueError(f"lr_scale: key {prefix!r} must be a parameter-name prefix such as 'sam.'")
            if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale < 0:
                raise ValueError(f"lr_scale.{prefix}: {scale!r} must be a number >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: {self.betas} must be two numbers in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: {self.weight_decay} must be >= 0")


@dataclass
class ScheduleConfig:
    """Linear warm-up from 0, then decay to `min_lr_ratio * lr` at `max_steps` (LISA: 100 warm-up, linear)."""

    warmup_steps: int = _help("optimizer steps of linear warm-up", default=100)
    decay: Literal["linear", "cosine", "constant"] = _help("shape after warm-up", default="linear")
    min_lr_ratio: float = _help("final learning rate as a fraction of the peak", default=0.0)

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: {self.warmup_steps} must be >= 0")
        if self.decay not in ("linear", "cosine", "constant"):
            raise ValueError(f"decay: '{self.decay}' is not one of linear, cosine, constant")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: {self.min_lr_ratio} must be in [0, 1]")


@dataclass
class TrainConfig:
    """Everything one training run needs; saved as train_config.json in the output directory."""

    model: str | dict[str, Any] = _help(
        "registry name (tiny, smollm2-sam-b, llava7b-sam-h, ...), a keyseg checkpoint folder or a config "
        "file whose KeySegConfig to start from (e.g. a `keyseg convert-lisa` output), or a KeySegConfig mapping")
    data: list[DataSource] = _help("the training mixture; sampled by `ratio`")
    model_overrides: dict[str, Any] = _help(
        "deep-merged into the model config, e.g. {fusion: {preset: seg_only}, loss: {preset: lisa}}; a switch set "
        "here wins over the model's preset, whose other values stay", default_factory=dict
    )
    init_checkpoint: str | None = _help(
        "start from this keyseg checkpoint's trainable weights; its frozen bases must match (fingerprint). "
        "Trainable parts it lacks (e.g. [KEY], fusion attentions, keyword head when starting KeySeg from a "
        "converted LISA) start fresh and are listed", default=None)
    prompt_anchors: str | None = _help(
        "a stage-1 heads.safetensors (keyseg pretrain): pull each S_hat towards the category prompt of its "
        "keyword (keyseg_core/train/stage2/anchors.py); for a SAM pretrained here, not in the paper", default=None)
    prompt_anchor_weight: float = _help("weight of the prompt-anchor loss (0: the paper's objective)", default=0.0)
    max_steps: int = _help("optimizer steps in the whole run (LISA: 10 epochs x 500)", default=5000)
    samples_per_epoch: int | None = _help("mixture length before the plan is redrawn; default: sum of the data set sizes", default=None)
    batch_size: int = _help("samples per device per micro-step (LISA: 2)", default=2)
    grad_accum: int = _help("micro-steps per optimizer step (LISA: 10)", default=10)
    max_grad_norm: float = _help("gradient clipping norm; 0 disables", default=1.0)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = _help(
        "mixed precision; 'auto' = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU", default="auto"
    )
    seed: int = _help("seed of the data order, query choice, dropout and every random init", default=42)
    output_dir: str = _help("run directory: checkpoints/, metrics.csv, tensorboard/, final/", default="runs/keyseg")
    save_every: int = _help("checkpoint every N optimizer steps (and at the end)", default=500)
    keep_last: int = _help("checkpoints kept; older ones are deleted after a new one is complete", default=3)
    log_every: int = _help("console log line every N optimizer steps (CSV/TensorBoard get every step)", default=10)
    log_backend: Literal["auto", "tensorboard", "csv"] = _help(
        "'auto' = TensorBoard when installed; metrics.csv is always written", default="auto"
    )
    distributed: Literal["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp"] = _help(
        "multi-GPU engine through accelerate (single process runs ignore it except deepspeed)", default="ddp"
    )
    num_workers: int = _help("DataLoader worker processes per rank", default=2)
    skip_bad: bool = _help("skip (and count) unreadable records instead of stopping; also --skip-bad", default=False)

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("data: at least one data source is needed")
        keys = [d.key for d in self.data]
        if len(set(keys)) != len(keys):
            raise ValueError(f"data: labels must be unique, got {keys}; set data[i].label")
        for name in ("max_steps", "batch_size", "grad_accum", "save_every", "keep_last", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: {getattr(self, name)} must be >= 1")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ValueError(f"samples_per_epoch: {self.samples_per_epoch} must be >= 1")
        if self.prompt_anchor_weight < 0:
            raise ValueError(f"prompt_anchor_weight: {self.prompt_anchor_weight} must be >= 0")
        if self.prompt_anchor_weight > 0 and not self.prompt_anchors:
            raise ValueError("prompt_anchor_weight > 0 needs prompt_anchors (a stage-1 heads.safetensors)")
        if self.max_grad_norm < 0:
            raise ValueError(f"max_grad_norm: {self.max_grad_norm} must be >= 0")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: {self.num_workers} must be >= 0")
        model = self.model_config()  # validates the model section and the overrides now, not at step 0
        if self.distributed == "deepspeed-zero3":
            # ZeRO-3 gathers a module's weights when every rank runs it; a rank whose batch skips SAM
            # (VQA) or the cross-attention (no [KEY]) would leave the others waiting
            skipping = [d.key for d in self.data if d.name == "vqa"
                        or (model.fusion.cross_attn and d.keyword in ("optional", "none"))]
            if skipping:
                raise ValueError(f"distributed: 'deepspeed-zero3' needs every sample to run SAM and the fusion "
                                 f"module, but data {skipping} has samples that skip them; use fsdp (which keeps "
                                 "those parts whole) or deepspeed-zero2")

    def model_config(self) -> KeySegConfig:
        """The KeySegConfig this run trains: registry/mapping, then `model_overrides`."""
        if isinstance(self.model, str):
            base = named_config(self.model).to_dict()
        else:
            base = copy.deepcopy(self.model)
        merged = deep_merge(base, self.model_overrides)
        try:
            config = KeySegConfig.from_dict(merged)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"model / model_overrides: {exc}") from exc
        if config.answer.count(SEG_TOKEN) != 1:
            raise ValueError("model.template: training data gives one mask per sample; the answer needs exactly one [SEG]")
        if config.fusion.use_key and config.template.answer.count(KEY_TOKEN) < 1:
            raise ValueError("model.template.answer: needs [KEY] when fusion.use_key is true")
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return build_dataclass(cls, data)

    @classmethod
    def from_file(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Load YAML/JSON (following `base:`), apply `key.sub=value` overrides, validate."""
        path = Path(path)
        data = load_mapping(path)
        for item in overrides or []:
            apply_override(data, item)
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc


def load_mapping(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one config file as a mapping, merged over its `base:` file (relative to it)."""
    path = path.resolve()
    if path in _seen:
        raise ValueError(f"{path}: 'base' files form a cycle")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ValueError(f"{path}: base: expected a file path, got {base!r}")
    return deep_merge(load_mapping(path.parent / base, _seen + (path,)), data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) is replaced. A `fusion` or `loss`
    mapping follows the preset rule of `keyseg_core.config.model.layer_section` (the later layer wins)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            if key in PRESET_SECTIONS:
                out[key] = layer_section(key, out[key], copy.deepcopy(value))
            else:
                out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_override(data: dict[str, Any], item: str) -> None:
    """'a.b.c=value' (value parsed as YAML; list items by index: 'data.0.ratio=2') into `data` in place.

    A value set inside a `fusion` or `loss` mapping is one more config layer (`layer_section`):
    `--set model_overrides.loss.bce=3` keeps the file's preset's other weights.
    """
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted.strip():
        raise ValueError(f"--set '{item}': expected key.path=value")
    value = yaml.safe_load(raw)
    parts = dotted.strip().split(".")
    *path, last = parts
    node: Any = data
    for i, part in enumerate(path):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"--set '{item}': '{'.'.join(parts[:i])}' has no item {part}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part in PRESET_SECTIONS and i == len(path) - 1:
                section = node.get(part) if isinstance(node.get(part), dict) else {}
                node[part] = layer_section(part, section, {last: value})
                return
            node = node.setdefault(part, {})
        else:
            raise ValueError(f"--set '{item}': '{'.'.join(parts[:i])}' is not a mapping or list")
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ValueError(f"--set '{item}': '{'.'.join(path)}' has no item {last}")
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ValueError(f"--set '{item}': '{'.'.join(path)}' is not a mapping or list")
