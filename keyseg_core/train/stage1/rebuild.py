"""Rebuild a stage-1 run from a shipped checkpoint, for when the run itself is gone.

Stages 2-4 start from a stage-1 run: its final/ (vision tower + SAM) and heads.safetensors (the
patch head and the category prompt table that stage 2's `prompt_anchors` read). KeySeg-Tiny v2's
stage 1 ran on a lent GPU machine, and its run lives only where it was copied back to. A shipped
checkpoint keeps most of it:

- SAM exactly: stages 2-4 train it with learning rate 0 (`optimizer.lr_scale: {sam.: 0}`);
- the tower and patch head as the category detector, rounded to float16;
- not the category prompts, which stage 3's codebook started from and then trained on.

This writes a stage-1 run from those parts. The prompt table is fitted again on the frozen SAM with
stage 1's own category-prompt loss (absent categories included, as the recipe draws them), on the
recipe's training scenes, starting where stage 1's started: the recipe's seed draws the heads in the
same order. The cell head is left as drawn: v2's recipe gives it no loss, and stage 2 never reads it.
`keyseg eval-bases` on the result measures how close the rebuilt prompts come to the original ones
(the original run's report is kept in docs/measurements/).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from keyseg_core.atomic import atomic_write_text
from keyseg_core.modeling.build import build_model
from keyseg_core.modeling.category_detector import CategoryDetector
from keyseg_core.scenes import load_knowledge
from keyseg_core.train.optim import OptimizerConfig, ScheduleConfig, learning_rate, set_lr
from keyseg_core.train.stage1.config import BasesConfig, BasesLoss, PromptMix
from keyseg_core.train.stage1.loop import HEADS_FILE, STAGE, STAGE1_PARTS, StageOne, StageOneHeads, is_stage1, \
    prompt_generator
from keyseg_core.train.stage1.scene_source import SceneSource
from keyseg_core.weights.checkpoint import save_checkpoint

DETECTOR_FILE = "category_detector.safetensors"
SAM_PREFIX = "sam."


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Every parameter of `module` out of the graph for the block, its trainable flags restored after
    (the saved run's frozen-weight fingerprint depends on them)."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _shipped_parts(checkpoint: Path) -> tuple[dict[str, torch.Tensor], CategoryDetector]:
    """SAM's tensors (names without 'sam.') and the category detector of a shipped checkpoint."""
    weights, detector_file = checkpoint / "trainable.safetensors", checkpoint / DETECTOR_FILE
    for need in (checkpoint / "config.json", weights, detector_file):
        if not need.is_file():
            raise FileNotFoundError(f"--checkpoint {checkpoint}: {need.name} does not exist (a gated checkpoint with a "
                                    "category detector is needed: keyseg attach-detector)")
    sam = {k[len(SAM_PREFIX):]: v for k, v in load_file(str(weights)).items() if k.startswith(SAM_PREFIX)}
    if not sam:
        raise ValueError(f"--checkpoint {checkpoint}: no SAM tensors in {weights.name}")
    return sam, CategoryDetector.load(detector_file)


def rebuild_bases(config: BasesConfig, checkpoint: str | Path, *, steps: int = 200, batch_size: int = 16,
                  lr: float = 0.01, progress: bool = True) -> dict:
    """Write the stage-1 run `config.output_dir` (final/, heads.safetensors, bases_config.json,
    summary.json) from `checkpoint`; returns the summary. Never writes into an existing run."""
    from tqdm.auto import tqdm

    if steps < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"steps {steps}, batch size {batch_size} and lr {lr} must all be > 0")
    checkpoint, out = Path(checkpoint), Path(config.output_dir)
    if out.exists():
        raise ValueError(f"output_dir: {out} already exists; rebuilding never writes into a run (choose a new one)")
    sam, detector = _shipped_parts(checkpoint)
    model, processor = build_model(config.model_config())
    names = sorted(load_knowledge().categories)
    if detector.names != names:
        raise ValueError(f"--checkpoint {checkpoint}: its detector's categories are not the scene generator's "
                         f"({len(detector.names)} against {len(names)})")
    if detector.feature_layer != model.llava.config.vision_feature_layer:
        raise ValueError(f"--checkpoint {checkpoint}: the detector reads tower layer {detector.feature_layer}, the "
                         f"config's model layer {model.llava.config.vision_feature_layer}")
    try:  # SAM's frozen tensors (its random positional encodings) are not saved: the config's seed draws them
        missing, unexpected = model.sam.load_state_dict(sam, strict=False)
        model.llava.model.vision_tower.load_state_dict(detector.tower.state_dict())
    except RuntimeError as err:
        raise ValueError(f"--checkpoint {checkpoint} does not fit the config's model ({config.model}): "
                         f"{str(err).splitlines()[-1].strip()}") from err
    trainable = {n for n, p in model.sam.named_parameters() if p.requires_grad}
    if unexpected or trainable & set(missing):
        raise ValueError(f"--checkpoint {checkpoint} does not fit the config's model ({config.model}): SAM tensors "
                         f"unexpected {unexpected[:3]}, missing {sorted(trainable & set(missing))[:3]}")
    torch.manual_seed(config.seed)
    heads = StageOneHeads.for_model(model, len(names))
    heads.patch.load_state_dict(detector.patch.state_dict())

    # the prompt table alone learns, by stage 1's category-prompt loss on the recipe's scenes
    fit = BasesConfig(**{**vars(config), "device": "cpu", "precision": "fp32", "batch_size": batch_size,
                         "max_steps": steps, "optimizer": OptimizerConfig(lr=lr),
                         "schedule": ScheduleConfig(warmup_steps=0, decay="cosine", min_lr_ratio=0.05),
                         "prompts": PromptMix(point=0.0, box=0.0, category=1.0, absent=config.prompts.absent),
                         "loss": BasesLoss(prompt_mask=1.0, sam_category=0.0, vision_category=0.0)})
    stage = StageOne(model, processor, heads, names, fit)
    table = heads.prompt.weight
    optimizer = torch.optim.Adam([table], lr=lr)
    source = SceneSource(stage.spec(), batch_size, config.seed, pool=0, workers=0)
    model.eval()
    started, ious, losses = time.perf_counter(), [], []
    bar = tqdm(total=steps, disable=not progress, desc="rebuild prompts", dynamic_ncols=True)
    with frozen(model), frozen(heads.patch), frozen(heads.cell):
        for step, scenes in enumerate(source.batches(0, steps)):
            set_lr(optimizer, learning_rate(step, fit))  # cosine from lr to 5% of it
            batch = stage.stack(scenes)
            loss, iou = stage.losses(batch, prompt_generator(torch.device("cpu"), config.seed, step))
            loss["prompt_mask"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss["prompt_mask"].item())
            ious.append(iou["category"].mean().item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", iou=f"{sum(ious[-50:]) / len(ious[-50:]):.3f}", refresh=False)
    bar.close()

    # written beside the run's place and renamed into it: an interrupted rebuild leaves no half run
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_checkpoint(model, partial / "final", keep=is_stage1, parts=STAGE1_PARTS,
                    extra={"stage": STAGE, "rebuilt_from": str(checkpoint)})
    save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(partial / HEADS_FILE))
    atomic_write_text(partial / "bases_config.json", config.to_json())
    tail = max(1, steps // 10)
    summary = {"rebuilt_from": str(checkpoint), "final": str(out / "final"), "prompt_fit_steps": steps,
               "batch_size": batch_size, "lr": lr, "seconds": round(time.perf_counter() - started, 1),
               "train_category_iou_last_10pct": round(sum(ious[-tail:]) / tail, 4),
               "train_loss_last_10pct": round(sum(losses[-tail:]) / tail, 4),
               "exact": ["sam (stages 2-4 kept it at learning rate 0)"],
               "approximate": ["vision tower and patch head (the detector's float16 copy)",
                               "category prompt table (fitted again on the frozen SAM)"],
               "not_recovered": ["cell head (no loss in v2's stage 1; never read by stage 2)"]}
    atomic_write_text(partial / "summary.json", json.dumps(summary, indent=2) + "\n")
    partial.rename(out)
    return summary
