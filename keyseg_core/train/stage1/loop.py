"""Stage 1 for a model with no pretrained vision tower or SAM: pretrain both on generated scenes.

The paper starts KeySeg from a pretrained CLIP tower and a pretrained SAM; none exists offline, and
learning them from KeySeg's own loss (one mask and one keyword per sample) is slow. This stage stands
in for their pretraining, on the same OpenMoji scenes (keyseg_core.scenes, train split), with every
object of every scene supervised:

- SAM learns promptable segmentation the way SAM itself was trained: each instance is prompted by a
  point inside it, its jittered box, or its category (a learned embedding), and segmented (BCE +
  Dice). A 1x1 head on the image embedding learns each cell's category mix.
- The vision tower learns each patch's category mix (the share of the patch each category covers),
  so its patches tell the LLM what is where.

Scenes are a function of (scene_seed, index) and prompts of (seed, step), so a resumed run sees
exactly what an uninterrupted one would. The result (final/, and model/ in every step checkpoint) is a
partial keyseg checkpoint holding only the vision tower and SAM; `keyseg train` starts stage 2 from it
with `init_checkpoint`. The heads (heads.safetensors beside final/ and in every step checkpoint) are
stage-1 only and never shipped; stage 2 may anchor S_hat on their category prompts (`prompt_anchors`).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from keyseg_core.atomic import atomic_write_text
from keyseg_core.modeling.build import build_model
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.losses import per_mask_bce_dice
from keyseg_core.modeling.processor import KeySegProcessor
from keyseg_core.modeling.sam import postprocess_masks
from keyseg_core.scenes import load_knowledge
from keyseg_core.train import state as ckpt
from keyseg_core.train.logger import MetricsLogger
from keyseg_core.train.optim import learning_rate, make_optimizer, set_lr
from keyseg_core.train.stage1.config import BasesConfig
from keyseg_core.train.stage1.scene_source import PreparedScene, SceneSource, SceneSpec, default_workers
from keyseg_core.train.stage1.targets import SceneBatch, category_maps, cell_targets, soft_cross_entropy
from keyseg_core.weights.checkpoint import in_parts, load_weights_into, save_checkpoint

PROMPT_KINDS = ("point", "box", "category")
STAGE1_PARTS = ["vision_tower.", "sam."]  # plain parameter-name markers of what stage 1 trains
HEADS_FILE = "heads.safetensors"
STAGE = "bases (vision tower + SAM)"
METRICS = ["step", "lr", "loss", "prompt_mask", "sam_category", "vision_category",
           *(f"iou_{k}" for k in PROMPT_KINDS), "absent_area", "step_time_s"]


def is_stage1(name: str) -> bool:
    return in_parts(name, STAGE1_PARTS) and "multi_modal_projector" not in name


class StageOneHeads(nn.Module):
    """Stage-1-only parts: patch and cell category classifiers, and category prompt embeddings."""

    def __init__(self, vision_width: int, sam_width: int, n_categories: int) -> None:
        super().__init__()
        self.patch = nn.Linear(vision_width, n_categories + 1)  # + background
        self.cell = nn.Conv2d(sam_width, n_categories + 1, 1)
        self.prompt = nn.Embedding(n_categories, sam_width)

    @classmethod
    def for_model(cls, model: KeySegModel, n_categories: int) -> StageOneHeads:
        return cls(model.llava.config.vision_config.hidden_size, model.sam.prompt_dim, n_categories)


def prompt_generator(device: torch.device, *key: int) -> torch.Generator:
    """A torch generator on `device` seeded by (seed, step) or (seed, index): prompts are drawn on the
    training device, and a resumed run draws the same ones."""
    return torch.Generator(device=device).manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


class StageOne:
    """The stage-1 computation for one model: a batch of scenes in, losses and per-prompt IoUs out.

    Every prompt of every scene is decoded in one mask-decoder call per prompt kind: each scene's
    prompts are padded to the batch's largest object count, and padding rows (or rows the prompt mix
    did not draw) are left out of the loss and the IoUs.
    """

    def __init__(self, model: KeySegModel, processor: KeySegProcessor, heads: StageOneHeads,
                 category_names: list[str], config: BasesConfig) -> None:
        self.model, self.processor, self.heads, self.config = model, processor, heads, config
        self.category_names = category_names
        self.n_classes = len(category_names) + 1
        vision = model.llava.config.vision_config
        self.patch_grid = vision.image_size // vision.patch_size
        self.feature_layer = model.llava.config.vision_feature_layer
        mix = config.prompts
        self.prompt_p = {"point": mix.point, "box": mix.box, "category": mix.category}
        self.absent_p = mix.absent

    def spec(self, split: str = "train", seed: int | None = None) -> SceneSpec:
        """What scene workers need: training draws the train split at scene_seed."""
        c = self.config
        return SceneSpec(c.scene_seed if seed is None else seed, split, c.scene_size[0], c.scene_size[1],
                         c.objects[0], c.objects[1], self.model.sam.image_size, self.processor.clip_size,
                         self.model.config.backbone.image_preprocess)

    def stack(self, scenes: list[PreparedScene]) -> SceneBatch:
        device = next(self.model.sam.parameters()).device
        return SceneBatch.stack(scenes, self.model.sam.image_size, device)

    def losses(self, batch: SceneBatch, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        w = self.config.loss
        cats = category_maps(batch.labels, batch.categories)
        zero = batch.sam_pixels.new_zeros(())
        vision = self._vision_loss(batch, cats) if w.vision_category else zero
        embeddings = self.model.sam.encode(batch.sam_pixels)
        cells = self._cell_loss(embeddings, cats) if w.sam_category else zero
        masks, ious = self._prompt_loss(batch, embeddings, gen)
        return {"prompt_mask": masks, "sam_category": cells, "vision_category": vision}, ious

    @torch.no_grad()
    def prompted_ious(self, batch: SceneBatch, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """IoU of each prompted instance by kind, prompts drawn as in training, and the predicted area
        (share of the scene) of category prompts ('category_area') and of absent ones ('absent');
        no losses, no graph."""
        return self._prompt_loss(batch, self.model.sam.encode(batch.sam_pixels), gen)[1]

    def _vision_loss(self, batch: SceneBatch, cats: torch.Tensor) -> torch.Tensor:
        tower = self.model.llava.model.vision_tower
        hidden = tower(pixel_values=batch.clip_pixels, output_hidden_states=True).hidden_states[self.feature_layer][:, 1:]
        frame = self.model.config.backbone.image_preprocess
        targets = cell_targets(cats, self.n_classes, self.patch_grid, frame, 0)
        return soft_cross_entropy(self.heads.patch(hidden), targets)

    def _cell_loss(self, embeddings: torch.Tensor, cats: torch.Tensor) -> torch.Tensor:
        grid = embeddings.shape[-1]
        targets = cell_targets(cats, self.n_classes, grid, "sam", self.model.sam.image_size)
        logits = self.heads.cell(embeddings).flatten(2).transpose(1, 2)  # (B, g*g, classes)
        return soft_cross_entropy(logits, targets)

    def decode(self, embeddings: torch.Tensor, sparse: torch.Tensor, batch: SceneBatch) -> torch.Tensor:
        """(B, C, g, g) embeddings + (B, N, T, C) prompt sets -> (B, N, H, W) mask logits at the scene's size,
        by the decoder call stage 2 and inference make (SamSegmenter.decode_batch)."""
        b, n = sparse.shape[:2]
        low = self.model.sam.decode_batch(embeddings, sparse)[0]
        logits = postprocess_masks(low.reshape(b * n, *low.shape[-2:]), batch.resized_hw, batch.original_hw,
                                   self.model.sam.image_size)
        return logits.view(b, n, *logits.shape[-2:])

    def _prompt_loss(self, batch: SceneBatch, embeddings: torch.Tensor,
                     gen: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = batch.categories.shape[1]
        truth = batch.labels[:, None] == torch.arange(1, n + 1, device=batch.labels.device)[None, :, None, None]
        total, count, ious = embeddings.new_zeros((), dtype=torch.float32), 0, {}
        for kind in PROMPT_KINDS:
            drawn = batch.valid & (torch.rand(batch.valid.shape, generator=gen, device=gen.device) < self.prompt_p[kind])
            if not self.prompt_p[kind] or not drawn.any():
                ious[kind] = embeddings.new_zeros(0)
                continue
            logits = self.decode(embeddings, self._prompts(kind, batch, truth, gen), batch)  # (B, N, H, W)
            bce, dice = per_mask_bce_dice(logits[drawn], truth[drawn])
            total = total + (bce + dice).sum()
            count += int(drawn.sum())
            with torch.no_grad():
                pred, gt = logits[drawn] > 0, truth[drawn]
                ious[kind] = (pred & gt).flatten(1).sum(1) / (pred | gt).flatten(1).sum(1).clamp(min=1)
                if kind == "category":  # predicted area of present objects: the other half of the presence signal
                    ious["category_area"] = pred.flatten(1).float().mean(1)
        if self.absent_p:
            total, count, ious["absent"] = self._absent_loss(batch, embeddings, gen, total, count)
        return total / max(count, 1), ious

    def _absent_loss(self, batch: SceneBatch, embeddings: torch.Tensor, gen: torch.Generator, total: torch.Tensor,
                     count: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        """One prompt per drawn scene for a category it does not hold, against the empty mask; returns the
        running loss sum and row count, and each row's predicted area (share of the scene: 0 is right)."""
        b = batch.categories.shape[0]
        drawn = torch.rand(b, generator=gen, device=gen.device) < self.absent_p
        scores = torch.rand((b, self.n_classes - 1), generator=gen, device=gen.device)
        scores[batch.valid.nonzero(as_tuple=True)[0], batch.categories[batch.valid]] = -1.0  # never a present one
        absent = scores.argmax(-1)  # (B,)
        if not drawn.any():
            return total, count, embeddings.new_zeros(0)
        logits = self.decode(embeddings, self.heads.prompt(absent)[:, None, None, :], batch)[:, 0]  # (B, H, W)
        bce, dice = per_mask_bce_dice(logits[drawn], torch.zeros_like(logits[drawn]))
        with torch.no_grad():
            area = (logits[drawn] > 0).flatten(1).float().mean(1)
        return total + (bce + dice).sum(), count + int(drawn.sum()), area

    def _prompts(self, kind: str, batch: SceneBatch, truth: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """(B, N, tokens, C) sparse prompt embeddings for every row (coordinates in SAM's frame)."""
        encoder = self.model.sam.sam.prompt_encoder
        if kind == "category":
            return self.heads.prompt(batch.categories)[:, :, None, :]
        h, w = truth.shape[-2:]
        scale = batch.resized_hw[0] / batch.original_hw[0]
        if kind == "point":  # a uniformly drawn pixel of each object: the argmax of noise over its mask
            noise = torch.rand(truth.shape, generator=gen, device=gen.device) * truth
            at = noise.flatten(2).argmax(-1)  # (B, N)
            coords = torch.stack([at % w, at // w], -1).float().add(0.5).mul(scale)[:, :, None]  # (B, N, 1, 2)
            sparse, _ = encoder(coords, torch.ones(coords.shape[:3], dtype=torch.long, device=coords.device), None, None)
            return sparse
        rows, cols = truth.any(-1), truth.any(-2)  # (B, N, H), (B, N, W)
        y0, x0 = rows.float().argmax(-1), cols.float().argmax(-1)
        y1, x1 = h - rows.flip(-1).float().argmax(-1), w - cols.flip(-1).float().argmax(-1)
        box = torch.stack([x0, y0, x1, y1], -1).float()  # (B, N, 4) in scene pixels, exclusive max
        size = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], -1).float()
        box = box + torch.randn(box.shape, generator=gen, device=gen.device) * 0.05 * size  # jitter 5% of the size
        sparse, _ = encoder(None, None, box * scale, None)
        return sparse


PROBE_STEPS = (5, 25)  # steps timed to fit max_steps into a time budget (the first ones warm up)


def fit_steps(config: BasesConfig, step: int, seconds_per_step: float, seconds_left: float) -> int:
    """max_steps that ends within the time left at the measured rate (5% spare), never below `step`."""
    return max(step, min(config.max_steps, step + int(0.95 * seconds_left / seconds_per_step)))


def pretrain_bases(config: BasesConfig, *, resume: bool = False, stop_at: int | None = None,
                   progress: bool = True, time_budget: float | None = None) -> dict:
    """Run (or continue) stage 1; returns the summary also written to <output_dir>/summary.json.

    time_budget: seconds of training (after the pool is ready). After PROBE_STEPS the step rate is
    measured and max_steps lowered to what fits, before the schedule's decay starts; the new value is
    written to bases_config.json (a resume must pass it: --set max_steps=N).
    """
    from tqdm.auto import tqdm

    device = config.torch_device()  # a device or precision this machine lacks is refused before anything runs
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    start = ckpt.latest_checkpoint(checkpoints) if resume else None
    if not resume and ckpt.complete_checkpoints(checkpoints):
        raise ValueError(f"{checkpoints} already holds checkpoints; pass --resume to continue, or use a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bases_config.json", config.to_json())
    print(f"resuming from {start}" if start else "starting from scratch")

    model_config = config.model_config()
    model, processor = build_model(model_config)  # random parts drawn on the CPU: the same on every device
    kb = load_knowledge()
    names = sorted(kb.categories)
    torch.manual_seed(config.seed)
    heads = StageOneHeads.for_model(model, len(names))
    parts = nn.ModuleDict({"vision_tower": model.llava.model.vision_tower, "sam": model.sam, "heads": heads})
    step = 0
    if start:
        step = ckpt.read_state(start).step
        load_weights_into(model, start / ckpt.MODEL_DIR, partial=True)
        heads.load_state_dict(load_file(str(start / HEADS_FILE)))
    # stage 1 moves and trains the tower, SAM and its own heads only (the rest keeps its trainable
    # flags, which the frozen-weight fingerprint of the saved bases depends on, but never enters the graph)
    parts.to(device)
    optimizer = make_optimizer(parts, config)
    if start:
        ckpt.load_optimizer(optimizer, start)
    stage = StageOne(model, processor, heads, names, config)
    workers = default_workers() if config.workers is None else config.workers
    if config.pool:
        print(f"preparing a pool of {config.pool} scenes with {workers} workers")
    t_pool = time.perf_counter()
    source = SceneSource(stage.spec(), config.batch_size, config.seed, config.pool, workers)
    pool_seconds = time.perf_counter() - t_pool
    logger = MetricsLogger(out, "csv", step, True, fields=METRICS)
    trainable = [p for p in parts.parameters() if p.requires_grad]
    w = config.loss
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    def save(at: int) -> None:
        tmp = ckpt.partial_dir(checkpoints, at)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_checkpoint(model, tmp / ckpt.MODEL_DIR, keep=is_stage1, parts=STAGE1_PARTS,
                        extra={"pretrain_steps": at, "stage": STAGE})
        save_file({k: v.contiguous().cpu() for k, v in heads.state_dict().items()}, str(tmp / HEADS_FILE))
        ckpt.save_optimizer(optimizer, tmp)
        atomic_write_text(tmp / ckpt.STATE_FILE, ckpt.TrainerState(at, at * config.batch_size, "bases").to_json())
        final = ckpt.step_dir(checkpoints, at)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        ckpt.rotate(checkpoints, config.keep_last)

    model.train()
    end = min(config.max_steps, stop_at or config.max_steps)
    bar = tqdm(total=config.max_steps, initial=step, disable=not progress, desc="pretrain", dynamic_ncols=True)
    started = time.perf_counter()
    last: dict = {}
    recent: list[float] = []  # category IoUs of the last log_every steps, for the bar
    first = step
    for scenes in source.batches(step, end):
        if step == first + PROBE_STEPS[0]:
            probe_t0 = time.perf_counter()
        if time_budget is not None and step == first + PROBE_STEPS[1]:
            rate = (time.perf_counter() - probe_t0) / (PROBE_STEPS[1] - PROBE_STEPS[0])
            fitted = fit_steps(config, step, rate, time_budget - (time.perf_counter() - started))
            if fitted < config.max_steps:
                if fitted <= config.schedule.warmup_steps:
                    raise ValueError(f"time budget: {time_budget:.0f} s fits only {fitted} steps at {rate:.3f} s a step, "
                                     f"not past warmup_steps {config.schedule.warmup_steps}")
                bar.write(f"time budget {time_budget:.0f} s at {rate * 1000:.0f} ms a step: max_steps {config.max_steps} -> {fitted}")
                config.max_steps = fitted
                end = min(end, fitted)
                bar.total = fitted
                atomic_write_text(out / "bases_config.json", config.to_json())
        if step >= end:
            break
        lr = learning_rate(step, config)
        set_lr(optimizer, lr)
        t0 = time.perf_counter()
        batch = stage.stack(scenes)
        with autocast:
            losses, ious = stage.losses(batch, prompt_generator(device, config.seed, step))
        loss = w.prompt_mask * losses["prompt_mask"] + w.sam_category * losses["sam_category"] + \
            w.vision_category * losses["vision_category"]
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = {"step": step, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                **{f"iou_{k}": ious[k].mean().item() if ious[k].numel() else math.nan for k in PROMPT_KINDS},
                "absent_area": ious["absent"].mean().item() if "absent" in ious and ious["absent"].numel() else math.nan,
                "step_time_s": time.perf_counter() - t0}
        logger.log(last)
        recent = (recent + [last["iou_category"]])[-config.log_every:]
        bar.update(1)
        bar.set_postfix(scenes_s=f"{config.batch_size / last['step_time_s']:.0f}", iou=f"{np.nanmean(recent):.3f}",
                        loss=f"{last['loss']:.3f}", refresh=False)
        if step % config.log_every == 0 or step == end:
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
        if step % config.save_every == 0 or step == config.max_steps:
            save(step)
    bar.close()
    logger.close()
    if step == config.max_steps:
        save_checkpoint(model, out / "final", overwrite=True, keep=is_stage1, parts=STAGE1_PARTS,
                        extra={"pretrain_steps": step, "stage": STAGE})
        # beside final/, not in it: stage 2 may anchor its prompts on the category embeddings (prompt_anchors)
        save_file({k: v.contiguous().cpu() for k, v in heads.state_dict().items()}, str(out / HEADS_FILE))
    seconds = time.perf_counter() - started
    summary = {"step": step, "max_steps": config.max_steps, "scenes_seen": step * config.batch_size,
               "seconds": round(seconds, 1), "pool_seconds": round(pool_seconds, 1), "device": str(device),
               "precision": config.precision, "resumed_from": str(start) if start else None,
               "last": last, "final": str(out / "final") if step == config.max_steps else None}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
