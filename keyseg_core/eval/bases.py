"""How well stage-1 bases segment an object when told which one: the ceiling of stage 2.

Stage 2 teaches the LLM to produce SAM's prompt; at best its prompt equals the category prompt
stage 1 learned for the keyword, so category-prompted IoU on held-out scenes bounds what the
finished model can segment even with every keyword right. Point and box prompts name the instance by
its position: when they score far above the category prompt, recognition (which object is "the cup")
is what fails, not the mask. Scenes come from the scene generator by (split, seed, index), so the
test split at the seed `keyseg generate` used is exactly the scenes `keyseg eval` scores.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from safetensors.torch import load_file

from keyseg_core.inference.presence import roc_auc
from keyseg_core.modeling.build import build_model
from keyseg_core.scenes import load_knowledge
from keyseg_core.scenes.generator import SPLIT_IDS
from keyseg_core.train import state as ckpt
from keyseg_core.train.stage1.config import BasesConfig, PromptMix
from keyseg_core.train.stage1.loop import HEADS_FILE, PROMPT_KINDS, StageOne, StageOneHeads, prompt_generator
from keyseg_core.train.stage1.scene_source import prepare_scene
from keyseg_core.weights.checkpoint import load_weights_into

# share of the scene an object's visible pixels cover
SIZE_BINS = (("small", 0.0, 0.04), ("medium", 0.04, 0.10), ("large", 0.10, 1.01))


def bases_paths(checkpoint: Path) -> tuple[Path, Path]:
    """(weights dir, heads file) of `<run>/final` (heads beside it) or a step dir (model/ + heads inside)."""
    if (checkpoint / ckpt.MODEL_DIR / "meta.json").is_file():
        weights, heads = checkpoint / ckpt.MODEL_DIR, checkpoint / HEADS_FILE
    else:
        weights, heads = checkpoint, checkpoint.parent / HEADS_FILE
    if not (weights / "meta.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a stage-1 checkpoint (<run>/final or <run>/checkpoints/step_N)")
    if not heads.is_file():
        raise FileNotFoundError(f"{heads}: missing; the category prompts of {checkpoint} are saved there")
    return weights, heads


def evaluate_bases(config: BasesConfig, checkpoint: Path, split: str, seed: int, scenes: int,
                   progress: bool = True) -> dict:
    """Every object of scenes 0..scenes-1 of (split, seed), prompted once by each kind."""
    from tqdm.auto import tqdm

    if split not in SPLIT_IDS:
        raise ValueError(f"--split: unknown split {split!r}; one of {', '.join(SPLIT_IDS)}")
    if scenes < 1:
        raise ValueError(f"--scenes: {scenes} must be >= 1")
    device = config.torch_device()
    weights, heads_file = bases_paths(checkpoint)
    model, processor = build_model(config.model_config())
    meta = load_weights_into(model, weights, partial=True)
    names = sorted(load_knowledge().categories)
    heads = StageOneHeads.for_model(model, len(names))
    heads.load_state_dict(load_file(str(heads_file)))
    model.sam.to(device)  # the only parts prompted IoU runs
    heads.to(device)
    every = dataclasses.replace(config, prompts=PromptMix(point=1.0, box=1.0, category=1.0, absent=1.0))
    stage = StageOne(model.eval(), processor, heads, names, every)
    spec = stage.spec(split, seed)
    ious: dict[str, list[float]] = {k: [] for k in (*PROMPT_KINDS, "category_area", "absent")}
    shares: list[float] = []
    for index in tqdm(range(scenes), disable=not progress, desc=f"bases {split}", dynamic_ncols=True):
        scene = prepare_scene(spec, index)
        shares += [float((scene.labels == i + 1).mean()) for i in range(len(scene.categories))]
        batch = stage.stack([scene])
        for kind, values in stage.prompted_ious(batch, prompt_generator(batch.labels.device, seed, index)).items():
            ious[kind] += values.tolist()
    share = np.array(shares)
    bins = {name: (share >= lo) & (share < hi) for name, lo, hi in SIZE_BINS}
    rows = {}
    for kind in PROMPT_KINDS:
        v = np.array(ious[kind])
        rows[kind] = {"trained_with": getattr(config.prompts, kind), "mean_iou": float(v.mean()),
                      "iou_at_least_0.5": float((v >= 0.5).mean()),
                      **{f"mean_iou_{name}": float(v[b].mean()) if b.any() else None for name, b in bins.items()}}
    return {"checkpoint": str(checkpoint), "pretrain_steps": meta.get("pretrain_steps"), "split": split,
            "seed": seed, "scenes": scenes, "objects": len(shares),
            "objects_by_size": {name: int(b.sum()) for name, b in bins.items()}, "prompts": rows,
            "presence": presence(np.array(ious["category_area"]), np.array(ious["absent"]), config.prompts.absent)}


def presence(present: np.ndarray, absent: np.ndarray, trained_with: float, miss: float = 0.05) -> dict:
    """How well the predicted area tells a present category (prompted by its own category) from an
    absent one (a category the scene does not hold): the area threshold that misses `miss` of the
    present objects, the share of absent prompts above it (false positives), and the ROC AUC."""
    threshold = float(np.quantile(present, miss))
    return {"trained_with": trained_with, "absent_prompts": len(absent), "mean_area_absent": float(absent.mean()),
            "mean_area_present": float(present.mean()), "threshold_area": threshold, "miss_rate": miss,
            "false_positive_rate": float((absent > threshold).mean()), "auc": roc_auc(present, absent)}


def format_table(report: dict) -> str:
    sizes = [name for name, _, _ in SIZE_BINS]
    head = ["prompt", "chance in training", "mean IoU", "IoU>=0.5",
            *(f"{n} ({report['objects_by_size'][n]})" for n in sizes)]
    lines = [f"{report['checkpoint']} (step {report['pretrain_steps']}): {report['objects']} objects in scenes "
             f"0-{report['scenes'] - 1} of split {report['split']}, seed {report['seed']}",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for kind, row in report["prompts"].items():
        cells = [f"{row[f'mean_iou_{n}']:.3f}" if row[f"mean_iou_{n}"] is not None else "-" for n in sizes]
        lines.append(f"| {kind} | {row['trained_with']:g} | {row['mean_iou']:.3f} | {row['iou_at_least_0.5']:.2f} | "
                     + " | ".join(cells) + " |")
    p = report["presence"]
    lines.append(f"presence ({p['absent_prompts']} prompts of absent categories, trained with chance "
                 f"{p['trained_with']:g}): predicted area {p['mean_area_absent']:.4f} vs {p['mean_area_present']:.4f} "
                 f"for present objects; at the area that misses {p['miss_rate']:.0%} of present objects "
                 f"({p['threshold_area']:.4f}), {p['false_positive_rate']:.0%} of absent prompts answer; AUC {p['auc']:.3f}")
    return "\n".join(lines)

