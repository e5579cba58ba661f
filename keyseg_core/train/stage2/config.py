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

from keyseg_core.config.files import deep_merge, load_config
from keyseg_core.config.model import KEY_TOKEN, SEG_TOKEN, KeySegConfig
from keyseg_core.config.schema import build_dataclass, help_field
from keyseg_core.data.registry import DATASETS
from keyseg_core.train.optim import OptimizerConfig, ScheduleConfig
from keyseg_core.train.stage2.kind_scenes import SOURCE_NAME as KIND_SCENES
from keyseg_core.weights.resolve import named_config

KEYWORD_POLICIES = ("require", "optional", "category", "none")
BACKENDS = ("ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp")


@dataclass
class DataSource:
    """One data set of the training mixture."""

    name: str = help_field(f"reader: one of {', '.join(DATASETS)}, or a refer name like 'refcocog|umd|train', or "
                           f"'{KIND_SCENES}' (generated \"all the <kind>\" samples; options: length, seed, queries)")
    root: str = help_field(f"data root (holding reason_seg/, refer_seg/, ... as in docs/data.md); none for {KIND_SCENES}",
                           default="")
    split: str = help_field("split to train on", default="train")
    ratio: float = help_field("sampling weight in the mixture (LISA: sem 9, refer 3, vqa 3, reason 1)", default=1.0)
    label: str | None = help_field("name of this source in logs and the mixture; defaults to `name`", default=None)
    keyword: Literal["require", "optional", "category", "none"] = help_field(
        "where the [KEY] target comes from when the model uses [KEY]: 'require' = the sample's keyword, "
        "missing is an error (or a counted skip with --skip-bad); 'optional' = samples without one use the "
        "no-[KEY] answer; 'category' = the COCO category name (refer data); 'none' = never [KEY]",
        default="require",
    )
    keywords: str | None = help_field("ReasonSeg only: keyword file (default: ReasonSeg/explanatory_key/keyword_outputs.json)", default=None)
    questions: Literal["plain", "lisa"] = help_field(
        "'plain' = the reader's query as the question and the model's answer templates; 'lisa' = LISA's "
        "question lists (short for classes, refer sentences and ReasonSeg phrases, long for ReasonSeg "
        "sentences) and, for samples without [KEY], LISA's answer list. Not used by vqa sources",
        default="plain",
    )
    options: dict[str, Any] = help_field("extra reader arguments (unit, split_by, refs_path, image_dir, ...)", default_factory=dict)

    def __post_init__(self) -> None:
        base = self.name.split("|")[0]
        if base not in DATASETS and base != KIND_SCENES:
            raise ValueError(f"name: unknown data set '{self.name}'; expected one of {', '.join(DATASETS)} "
                             f"or {KIND_SCENES}")
        if base != KIND_SCENES and not self.root:
            raise ValueError(f"root: data set '{self.name}' needs its data root")
        if base == KIND_SCENES and (self.keyword != "require" or self.questions != "plain"):
            raise ValueError(f"keyword / questions: '{KIND_SCENES}' samples always carry their kind as keyword "
                             "and their own phrasing; leave keyword 'require' and questions 'plain'")
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
class TrainConfig:
    """Everything one training run needs; saved as train_config.json in the output directory."""

    model: str | dict[str, Any] = help_field(
        "registry name (tiny, smollm2-sam-b, llava7b-sam-h, ...), a keyseg checkpoint folder or a config "
        "file whose KeySegConfig to start from (e.g. a `keyseg convert-lisa` output), or a KeySegConfig mapping")
    data: list[DataSource] = help_field("the training mixture; sampled by `ratio`")
    model_overrides: dict[str, Any] = help_field(
        "deep-merged into the model config, e.g. {fusion: {preset: seg_only}, loss: {preset: lisa}}; a switch set "
        "here wins over the model's preset, whose other values stay", default_factory=dict
    )
    init_checkpoint: str | None = help_field(
        "start from this keyseg checkpoint's trainable weights; its frozen bases must match (fingerprint). "
        "Trainable parts it lacks (e.g. [KEY], fusion attentions, keyword head when starting KeySeg from a "
        "converted LISA) start fresh and are listed", default=None)
    prompt_anchors: str | None = help_field(
        "a stage-1 heads.safetensors (keyseg pretrain): pull each S_hat towards the category prompt of its "
        "keyword (keyseg_core/train/stage2/anchors.py); for a SAM pretrained here, not in the paper", default=None)
    prompt_anchor_weight: float = help_field("weight of the prompt-anchor loss (0: the paper's objective)", default=0.0)
    max_steps: int = help_field("optimizer steps in the whole run (LISA: 10 epochs x 500)", default=5000)
    samples_per_epoch: int | None = help_field("mixture length before the plan is redrawn; default: sum of the data set sizes", default=None)
    batch_size: int = help_field("samples per device per micro-step (LISA: 2)", default=2)
    grad_accum: int = help_field("micro-steps per optimizer step (LISA: 10)", default=10)
    max_grad_norm: float = help_field("gradient clipping norm; 0 disables", default=1.0)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = help_field(
        "mixed precision; 'auto' = bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU", default="auto"
    )
    seed: int = help_field("seed of the data order, query choice, dropout and every random init", default=42)
    output_dir: str = help_field("run directory: checkpoints/, metrics.csv, tensorboard/, final/", default="runs/keyseg")
    save_every: int = help_field("checkpoint every N optimizer steps (and at the end)", default=500)
    keep_last: int = help_field("checkpoints kept; older ones are deleted after a new one is complete", default=3)
    log_every: int = help_field("console log line every N optimizer steps (CSV/TensorBoard get every step)", default=10)
    log_backend: Literal["auto", "tensorboard", "csv"] = help_field(
        "'auto' = TensorBoard when installed; metrics.csv is always written", default="auto"
    )
    distributed: Literal["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp"] = help_field(
        "multi-GPU engine through accelerate (single process runs ignore it except deepspeed)", default="ddp"
    )
    num_workers: int = help_field("DataLoader worker processes per rank", default=2)
    skip_bad: bool = help_field("skip (and count) unreadable records instead of stopping; also --skip-bad", default=False)

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
        return load_config(cls, path, overrides)
