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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from keyseg_core.atomic import atomic_write_text
from keyseg_core.builder import build_model
from keyseg_core.checkpoint import load_weights_into, save_checkpoint
from keyseg_core.losses import mask_bce_loss, mask_dice_loss
from keyseg_core.model import KeySegModel
from keyseg_core.processor import KeySegProcessor
from keyseg_core.sam import postprocess_masks, preprocess_sam
from keyseg_core.scenes import SceneConfig, load_knowledge, make_sample

from . import state as ckpt
from .bases_config import BasesConfig
from .logger import MetricsLogger
from .loop import learning_rate, make_optimizer

PROMPT_KINDS = ("point", "box", "category")
STAGE1_PARTS = ("vision_tower.", "sam.")  # plain parameter-name markers of what stage 1 trains
HEADS_FILE = "heads.safetensors"
STAGE = "bases (vision tower + SAM)"
METRICS = ["step", "lr", "loss", "prompt_mask", "sam_category", "vision_category",
           *(f"iou_{k}" for k in PROMPT_KINDS), "step_time_s"]


def is_stage1(name: str) -> bool:
    return any(part in name for part in STAGE1_PARTS) and "multi_modal_projector" not in name


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


@dataclass
class SceneBatch:
    images: list[np.ndarray]
    labels: list[np.ndarray]  # HxW instance ids (0 background, i + 1 object i)
    categories: list[list[int]]  # per scene, per object: category index (0-based)


def category_map(labels: np.ndarray, categories: list[int]) -> torch.Tensor:
    """HxW instance ids -> (K+1, H, W) one-hot of category (channel 0 = background)."""
    lookup = torch.tensor([0] + [c + 1 for c in categories])
    return lookup[torch.from_numpy(labels.astype(np.int64))]


def cell_targets(cats: torch.Tensor, n_classes: int, grid: int, frame: str, frame_size: int) -> torch.Tensor:
    """(H, W) category ids -> (grid*grid, n_classes) share of each cell per class, in the model's frame.

    frame 'sam': resized (longest side = frame_size) into the top-left of a square (SAM's padding);
    'pad': centred in a square (LLaVA's pad); 'crop': centre square (CLIP's crop). Only the classes
    present are pooled (a scene has a handful of the 60), then scattered into all classes.
    """
    present = torch.unique(torch.cat([cats.new_zeros(1), cats.flatten()]))  # background always
    planes = (cats[None] == present[:, None, None]).float()[None]  # (1, P, H, W)
    h, w = cats.shape
    if frame == "sam":
        scale = frame_size / max(h, w)
        rh, rw = int(h * scale + 0.5), int(w * scale + 0.5)
        planes = F.pad(F.interpolate(planes, (rh, rw), mode="area"), (0, frame_size - rw, 0, frame_size - rh))
        planes[0, 0, rh:, :] = 1.0  # padding is background (class 0 is present[0])
        planes[0, 0, :, rw:] = 1.0
    elif frame == "pad":
        side = max(h, w)
        top, left = (side - h) // 2, (side - w) // 2
        planes = F.pad(planes, (left, side - w - left, top, side - h - top))
        background = torch.ones(side, side, dtype=torch.bool)
        background[top:top + h, left:left + w] = False
        planes[0, 0][background] = 1.0
    else:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        planes = planes[..., top:top + side, left:left + side]
    pooled = F.adaptive_avg_pool2d(planes, grid)[0].flatten(1).T  # (grid*grid, P)
    out = pooled.new_zeros(pooled.shape[0], n_classes)
    out[:, present] = pooled
    return out


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * F.log_softmax(logits, dim=-1)).sum(-1).mean()


class StageOne:
    """The stage-1 computation for one model: batches of scenes in, losses and per-prompt IoUs out."""

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

    def scenes(self, first: int, count: int, split: str = "train", seed: int | None = None) -> SceneBatch:
        """Scenes first..first+count-1 of a split; training draws the train split at scene_seed."""
        c = self.config
        scene_cfg = SceneConfig(width=c.scene_size[0], height=c.scene_size[1], min_objects=c.objects[0],
                                max_objects=c.objects[1])
        images, labels, cats = [], [], []
        for index in range(first, first + count):
            scene = make_sample(c.scene_seed if seed is None else seed, split, index, scene_cfg).scene
            images.append(scene.image)
            labels.append(scene.labels)
            cats.append([self.category_names.index(o.category) for o in scene.objects])
        return SceneBatch(images, labels, cats)

    def losses(self, batch: SceneBatch, rng: np.random.Generator) -> tuple[dict[str, torch.Tensor], dict[str, list[float]]]:
        cats = [category_map(lab, c) for lab, c in zip(batch.labels, batch.categories)]
        vision = self._vision_loss(batch, cats)
        sam_pixels, embeddings = self._encode_sam(batch)
        cells = self._cell_loss(embeddings, cats)
        masks, ious = self._prompt_loss(batch, sam_pixels, embeddings, rng)
        return {"prompt_mask": masks, "sam_category": cells, "vision_category": vision}, ious

    @torch.no_grad()
    def prompted_ious(self, batch: SceneBatch, rng: np.random.Generator) -> dict[str, list[float]]:
        """IoU of each prompted instance, prompts drawn as in training; no losses, no graph."""
        return self._prompt_loss(batch, *self._encode_sam(batch), rng)[1]

    def _encode_sam(self, batch: SceneBatch) -> tuple[list, torch.Tensor]:
        """SAM-preprocessed scenes and their image embeddings (B, C, g, g)."""
        sam_pixels = [preprocess_sam(img, self.model.sam.image_size) for img in batch.images]
        return sam_pixels, self.model.sam.encode(torch.stack([p.pixels for p in sam_pixels]))

    def _vision_loss(self, batch: SceneBatch, cats: list[torch.Tensor]) -> torch.Tensor:
        pixels = torch.stack([self.processor.preprocess_clip(img) for img in batch.images])
        tower = self.model.llava.model.vision_tower
        hidden = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[self.feature_layer][:, 1:]
        frame = self.model.config.backbone.image_preprocess
        targets = torch.stack([cell_targets(c, self.n_classes, self.patch_grid, frame, 0) for c in cats])
        return soft_cross_entropy(self.heads.patch(hidden), targets)

    def _cell_loss(self, embeddings: torch.Tensor, cats: list[torch.Tensor]) -> torch.Tensor:
        grid = embeddings.shape[-1]
        targets = torch.stack([cell_targets(c, self.n_classes, grid, "sam", self.model.sam.image_size) for c in cats])
        logits = self.heads.cell(embeddings).flatten(2).transpose(1, 2)  # (B, g*g, classes)
        return soft_cross_entropy(logits, targets)

    def _prompt_loss(self, batch: SceneBatch, sam_pixels, embeddings: torch.Tensor,
                     rng: np.random.Generator) -> tuple[torch.Tensor, dict[str, list[float]]]:
        sam = self.model.sam.sam
        positional = sam.get_image_wide_positional_embeddings().to(embeddings.dtype)
        _, dense = sam.prompt_encoder(None, None, None, None)
        losses, ious = [], {k: [] for k in PROMPT_KINDS}
        for b, (image, labels, categories) in enumerate(zip(batch.images, batch.labels, batch.categories)):
            scale = sam_pixels[b].resized_hw[0] / image.shape[0]
            for kind in PROMPT_KINDS:
                drawn = rng.random(len(categories)) < self.prompt_p[kind]
                chosen = [i for i in range(len(categories)) if drawn[i]]
                if not chosen:
                    continue
                truth = np.stack([labels == i + 1 for i in chosen]).astype(np.uint8)  # (n, H, W)
                sparse = self._prompts(kind, truth, [categories[i] for i in chosen], scale, rng)
                low, _ = sam.mask_decoder(image_embeddings=embeddings[b:b + 1], image_positional_embeddings=positional,
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)[:2]
                logits = postprocess_masks(low.reshape(-1, *low.shape[-2:]), sam_pixels[b].resized_hw,
                                           sam_pixels[b].original_hw, self.model.sam.image_size)
                target = torch.from_numpy(truth)
                losses.append((mask_bce_loss([logits], [target]) + mask_dice_loss([logits], [target])) * len(chosen))
                with torch.no_grad():
                    pred, gt = logits > 0, target.bool()
                    inter = (pred & gt).flatten(1).sum(1)
                    union = (pred | gt).flatten(1).sum(1).clamp(min=1)
                    ious[kind] += (inter / union).tolist()
        count = sum(len(v) for v in ious.values())
        return torch.stack(losses).sum() / count, ious

    def _prompts(self, kind: str, truth: np.ndarray, categories: list[int], scale: float,
                 rng: np.random.Generator) -> torch.Tensor:
        """(1, n, tokens, C) sparse prompt embeddings for n instances (coordinates in SAM's frame)."""
        encoder = self.model.sam.sam.prompt_encoder
        if kind == "category":
            return self.heads.prompt(torch.tensor(categories))[None, :, None, :]
        if kind == "point":
            points = []
            for m in truth:
                ys, xs = np.nonzero(m)
                j = rng.integers(len(xs))
                points.append([[(xs[j] + 0.5) * scale, (ys[j] + 0.5) * scale]])
            coords = torch.tensor(points, dtype=torch.float32)[None]  # (1, n, 1, 2)
            sparse, _ = encoder(coords, torch.ones(coords.shape[:3], dtype=torch.long), None, None)
            return sparse
        boxes = []
        for m in truth:
            ys, xs = np.nonzero(m)
            x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
            jitter = rng.normal(0.0, 0.05, 4) * np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
            boxes.append((np.array([x0, y0, x1, y1]) + jitter) * scale)
        sparse, _ = encoder(None, None, torch.tensor(np.array(boxes), dtype=torch.float32)[None], None)
        return sparse


def pretrain_bases(config: BasesConfig, *, resume: bool = False, stop_at: int | None = None,
                   progress: bool = True) -> dict:
    """Run (or continue) stage 1; returns the summary also written to <output_dir>/summary.json."""
    from tqdm.auto import tqdm

    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    start = ckpt.latest_checkpoint(checkpoints) if resume else None
    if not resume and ckpt.complete_checkpoints(checkpoints):
        raise ValueError(f"{checkpoints} already holds checkpoints; pass --resume to continue, or use a new output_dir")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "bases_config.json", config.to_json())
    print(f"resuming from {start}" if start else "starting from scratch")

    model_config = config.model_config()
    model, processor = build_model(model_config)
    kb = load_knowledge()
    names = sorted(kb.categories)
    torch.manual_seed(config.seed)
    heads = StageOneHeads.for_model(model, len(names))
    parts = nn.ModuleDict({"vision_tower": model.llava.model.vision_tower, "sam": model.sam, "heads": heads})
    # stage 1 trains the tower, SAM and its own heads only (the rest keeps its trainable flags, which
    # the frozen-weight fingerprint of the saved bases depends on, but never enters the graph)
    optimizer = make_optimizer(parts, config)
    step = 0
    if start:
        step = ckpt.read_state(start).step
        load_weights_into(model, start / ckpt.MODEL_DIR, partial=True)
        heads.load_state_dict(load_file(str(start / HEADS_FILE)))
        ckpt.load_optimizer(optimizer, start)
    stage = StageOne(model, processor, heads, names, config)
    logger = MetricsLogger(out, "csv", step, True, fields=METRICS)
    trainable = [p for p in parts.parameters() if p.requires_grad]
    w = config.loss

    def save(at: int) -> None:
        tmp = ckpt.partial_dir(checkpoints, at)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_checkpoint(model, tmp / ckpt.MODEL_DIR, keep=is_stage1, extra={"pretrain_steps": at, "stage": STAGE})
        save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(tmp / HEADS_FILE))
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
    while step < end:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        batch = stage.scenes(step * config.batch_size, config.batch_size)
        losses, ious = stage.losses(batch, np.random.default_rng([config.seed, step]))
        loss = w.prompt_mask * losses["prompt_mask"] + w.sam_category * losses["sam_category"] + \
            w.vision_category * losses["vision_category"]
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last = {"step": step, "lr": lr, "loss": loss.item(), **{k: v.item() for k, v in losses.items()},
                **{f"iou_{k}": float(np.mean(v)) if v else math.nan for k, v in ious.items()},
                "step_time_s": time.perf_counter() - t0}
        logger.log(last)
        bar.update(1)
        if step % config.log_every == 0 or step == end:
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
        if step % config.save_every == 0 or step == config.max_steps:
            save(step)
    bar.close()
    logger.close()
    if step == config.max_steps:
        save_checkpoint(model, out / "final", overwrite=True, keep=is_stage1, extra={"pretrain_steps": step, "stage": STAGE})
        # beside final/, not in it: stage 2 may anchor its prompts on the category embeddings (prompt_anchors)
        save_file({k: v.contiguous() for k, v in heads.state_dict().items()}, str(out / HEADS_FILE))
    summary = {"step": step, "max_steps": config.max_steps, "scenes_seen": step * config.batch_size,
               "seconds": round(time.perf_counter() - started, 1), "resumed_from": str(start) if start else None,
               "last": last, "final": str(out / "final") if step == config.max_steps else None}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
