"""The training loop: one flat function, read top to bottom.

build model -> open data -> optimizer -> (resume) -> for each step: set lr, accumulate micro-batches,
clip, step, log, checkpoint. Everything a resume needs (weights, optimizer, step, data position,
RNG) is in the step checkpoint, so a 2N-step run equals an N-step run plus an N-step resume.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from keyseg_core.atomic import atomic_write_text
from keyseg_core.config.model import KeySegConfig
from keyseg_core.modeling.build import build_model
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.processor import KeySegBatch
from keyseg_core.train import state as ckpt
from keyseg_core.train.stage2.anchors import PromptAnchors
from keyseg_core.train.stage2.config import TrainConfig
from keyseg_core.train.stage2.data import Collator, TrainStream, make_loader, open_sources, training_keywords
from keyseg_core.weights.checkpoint import CONFIG_FILE, load_weights_into, save_checkpoint
from keyseg_core.train.engine import (
    clip_gradients,
    full_parameters,
    input_dtype,
    is_fsdp,
    is_sharded,
    load_engine_state,
    make_accelerator,
    params_partitioned,
    prepare,
    resolve_precision,
    save_engine_state,
)
from keyseg_core.train.logger import MetricsLogger
from keyseg_core.train.optim import learning_rate, make_optimizer, set_lr

LOSS_KEYS = ("ce", "bce", "dice", "keyword", "anchor")
# keys that may change between an interrupted run and its resume without changing the result
RESUMABLE_CHANGES = {"output_dir", "save_every", "keep_last", "log_every", "log_backend", "num_workers", "skip_bad"}


def check_same_encoders(model_config: KeySegConfig, checkpoint: str) -> None:
    """Refuse, before anything is built, bases whose image encoders are of another kind than this model's."""
    path = Path(checkpoint) / CONFIG_FILE
    if not path.is_file():
        return  # load_weights_into names the missing checkpoint
    saved = json.loads(path.read_text(encoding="utf-8"))
    for section, key in (("sam", "encoder"), ("sam", "stem"), ("backbone", "vision_stem")):
        theirs = saved.get(section, {}).get(key, getattr(type(getattr(model_config, section))(), key, None))
        ours = getattr(getattr(model_config, section), key)
        if theirs != ours:
            raise ValueError(f"init_checkpoint: {checkpoint} was trained with {section}.{key} '{theirs}' but this "
                             f"model has '{ours}'; set model_overrides: {{{section}: {{{key}: {theirs}}}}}")


def config_digest(config: TrainConfig) -> str:
    data = {k: v for k, v in config.to_dict().items() if k not in RESUMABLE_CHANGES}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class LossModule(torch.nn.Module):
    """The model as DDP/DeepSpeed should see it: forward returns a dict of tensors (the engines
    look for tensors in tuples and dicts, not in KeySegOutput dataclasses)."""

    def __init__(self, model: KeySegModel, anchors: PromptAnchors | None = None, anchor_weight: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.anchors = anchors
        self.anchor_weight = anchor_weight

    def forward(self, batch: KeySegBatch) -> dict[str, torch.Tensor]:
        out = self.model(batch)
        if self.anchors is None:
            return {"loss": out.loss, **out.losses, "anchor": out.loss.new_zeros(())}
        anchor = self.anchors.loss(out.prompts, out.seg_batch, batch.target_keywords, out.prompt_logits)
        return {"loss": out.loss + self.anchor_weight * anchor, **out.losses, "anchor": anchor.detach()}


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every trainable tensor's bytes: ranks in sync have equal digests."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(config: TrainConfig, *, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> dict:
    """Run (or continue) training; returns the summary also written to <output_dir>/summary.json.

    stop_at: end after this optimizer step as if interrupted (the schedule still spans max_steps).
    """
    from accelerate.utils import gather_object, set_seed
    from tqdm.auto import tqdm

    accelerator = make_accelerator(config)
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    out = Path(config.output_dir)
    checkpoints = out / "checkpoints"
    model_config = config.model_config()

    # ---- where to start ----
    start = ckpt.latest_checkpoint(checkpoints) if resume else None
    if not resume and ckpt.complete_checkpoints(checkpoints):
        raise ValueError(f"{checkpoints} already holds checkpoints; pass --resume to continue, or use a new output_dir")
    state = ckpt.read_state(start) if start else ckpt.TrainerState(0, 0, config_digest(config))
    if start and state.config_digest != config_digest(config):
        accelerator.print(f"warning: {start} was written with a different config (digest {state.config_digest}); "
                          "resuming anyway, results will differ from an uninterrupted run")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_config.json", config.to_json())
        accelerator.print(f"resuming from {start} (step {state.step})" if start else
                          "starting from scratch" + (" (no checkpoint to resume)" if resume else ""))

    # ---- model, data, optimizer ----
    opened = open_sources(config, model_config, config.skip_bad)
    if main:
        for name in opened.skip_counts():
            accelerator.print(f"data '{name}': {opened.skips[name].summary()}")
    # decoding candidates saved with the model: its own vocabulary plus every keyword it trains on
    vocabulary = model_config.keyword.vocabulary or []
    learned = training_keywords(opened, config.data, model_config.fusion.use_key)
    if learned:
        model_config.keyword.vocabulary = list(dict.fromkeys(vocabulary + learned))
    if config.init_checkpoint and not start:
        check_same_encoders(model_config, config.init_checkpoint)
    set_seed(config.seed, device_specific=True)
    model, processor = build_model(model_config, torch.float32, accelerator.device)
    fresh: list[str] = [name for name, p in model.named_parameters() if p.requires_grad]
    if start:
        load_weights_into(model, start / ckpt.MODEL_DIR, check_frozen=False)  # this run's own bases
        fresh = []
    elif config.init_checkpoint:
        try:
            fresh = load_weights_into(model, config.init_checkpoint, partial=True)["fresh"]
        except (FileNotFoundError, ValueError) as exc:
            raise type(exc)(f"init_checkpoint: {exc}") from exc
        if fresh:
            parts = sorted({name.split(".")[0] for name in fresh})
            accelerator.print(f"init_checkpoint: {len(fresh)} trainable tensor(s) not in {config.init_checkpoint} "
                              f"start fresh ({', '.join(parts)})")
    stream = TrainStream(opened, config.data, config.samples_per_epoch, config.seed, model_config.fusion.use_key)
    anchors = None
    if config.prompt_anchors and config.prompt_anchor_weight > 0:
        from keyseg_core.scenes import load_knowledge  # the stage-1 category order

        anchors = PromptAnchors.load(config.prompt_anchors, sorted(load_knowledge().categories))
        anchors.to(accelerator.device)
        if model.fusion.codebook is not None and not start and "fusion.codebook" in fresh:
            anchors.seed_codebook(model.fusion.codebook)  # a new codebook starts at SAM's category prompts
            accelerator.print(f"fusion.codebook: the {len(anchors.rows)} category prompts of {config.prompt_anchors}")
    model, optimizer = prepare(accelerator, config, LossModule(model, anchors, config.prompt_anchor_weight),
                               lambda module: make_optimizer(module, config))
    sharded = is_sharded(accelerator, model)
    dtype = input_dtype(accelerator, config)  # pixels in the dtype the model computes in
    if start:
        if sharded:
            load_engine_state(accelerator, model, optimizer, start / ckpt.ENGINE_DIR)
        else:
            ckpt.load_optimizer(optimizer, start)
    loader = iter(make_loader(stream, Collator(processor, model_config), state.consumed, config.batch_size,
                              rank, world, config.num_workers))
    # RNG last: creating the loader iterator above draws from the generator in fresh and resumed runs alike
    if start and not ckpt.load_rng(start, rank):
        accelerator.print(f"warning: no RNG state for rank {rank} in {start}; dropout noise will differ")
    trainable = [p for p in model.parameters() if p.requires_grad]
    logger = MetricsLogger(out, config.log_backend, state.step, main)
    per_step = config.grad_accum * world * config.batch_size

    def save(step: int) -> None:
        tmp = ckpt.partial_dir(checkpoints, step)
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        with full_parameters(accelerator, model) as inner:
            if main:
                save_checkpoint(inner.model, tmp / ckpt.MODEL_DIR, extra={"train_steps": step, "samples_seen": state.consumed})
        if sharded:
            save_engine_state(accelerator, model, optimizer, tmp / ckpt.ENGINE_DIR)
        elif main:
            ckpt.save_optimizer(optimizer, tmp)
        ckpt.save_rng(tmp, rank)
        accelerator.wait_for_everyone()
        if main:
            atomic_write_text(tmp / ckpt.STATE_FILE, ckpt.TrainerState(step, state.consumed, state.config_digest).to_json())
            final = ckpt.step_dir(checkpoints, step)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            ckpt.rotate(checkpoints, config.keep_last)
        accelerator.wait_for_everyone()

    # ---- the loop ----
    model.train()
    last: dict[str, float] = {}
    step_times: list[float] = []
    end = min(config.max_steps, stop_at or config.max_steps)
    bar = tqdm(total=config.max_steps, initial=state.step, disable=not (main and progress), desc="train", dynamic_ncols=True)
    while state.step < end:
        lr = learning_rate(state.step, config)
        set_lr(optimizer, lr)
        t0 = time.perf_counter()
        sums = torch.zeros(len(LOSS_KEYS) + 1, device=accelerator.device)
        for _ in range(config.grad_accum):
            batch = next(loader).batch.to(accelerator.device, dtype)
            with accelerator.accumulate(model):
                losses = model(batch)
                accelerator.backward(losses["loss"])
            sums += torch.stack([losses[k].detach().float() for k in ("loss",) + LOSS_KEYS])
        grad_norm = float("nan")
        if config.max_grad_norm > 0 and accelerator.sync_gradients:
            grad_norm = clip_gradients(accelerator, model, trainable, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.consumed += per_step
        means = (accelerator.reduce(sums, reduction="mean") / config.grad_accum).tolist()
        step_times.append(time.perf_counter() - t0)
        last = {"step": state.step, "lr": lr, "loss": means[0], **dict(zip(LOSS_KEYS, means[1:])),
                "grad_norm": grad_norm, "step_time_s": step_times[-1], "samples": state.consumed}
        logger.log(last)
        bar.update(1)
        bar.set_postfix({k: f"{last[k]:.3f}" for k in ("loss",) + LOSS_KEYS})
        if main and (state.step % config.log_every == 0 or state.step == end):
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
        if state.step % config.save_every == 0 or state.step == config.max_steps:
            save(state.step)
    bar.close()
    logger.close()

    # ---- the end: final weights and a summary every rank agrees on ----
    # replicas must agree; a sharded engine holds one copy of each weight, so there is nothing to compare
    digests = None if params_partitioned(accelerator, model) else gather_object(
        [weights_digest(accelerator.unwrap_model(model).model)])
    if state.step == config.max_steps:
        with full_parameters(accelerator, model) as inner:
            if main:
                save_checkpoint(inner.model, out / "final", overwrite=True,
                                extra={"train_steps": state.step, "samples_seen": state.consumed})
    summary = {
        "step": state.step, "max_steps": config.max_steps, "samples_seen": state.consumed, "world_size": world,
        "engine": "FSDP (torch)" if is_fsdp(model) else str(accelerator.distributed_type),
        "precision": resolve_precision(config.precision),
        "device": str(accelerator.device), "resumed_from": str(start) if start else None,
        "mean_step_time_s": sum(step_times) / len(step_times) if step_times else None,
        "last": last, "skipped": opened.skip_counts(), "rank_weight_digests": digests,
        "checkpoints": [str(p) for p in ckpt.complete_checkpoints(checkpoints)],
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary
