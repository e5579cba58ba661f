"""The distributed engine: DDP or DeepSpeed ZeRO-2/3 through accelerate, FSDP through torch itself.

accelerate reads the launcher's environment (torchrun or `accelerate launch`), so the same command
runs on one CPU, one GPU, eight GPUs or several nodes. FSDP is wrapped here with torch's own
FullyShardedDataParallel rather than accelerate's plugin, which enables FSDP on GPUs only: one code
path then trains on GPUs (NCCL) and in the 2-process CPU (gloo) test. The helpers below hide what
the sharded engines change for us: parameters must be gathered before the weights are written,
gradients are clipped by the engine, and the optimizer state goes through the engine's format.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from keyseg_core.train.stage2.config import TrainConfig

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}
# Layers every rank runs at every step, so each can be its own FSDP unit. SAM and the fusion module
# run only for samples with a [SEG] (not for VQA): they stay in the root unit, gathered whole, so a
# rank whose batch skips them never leaves the others waiting in an all-gather.
FSDP_LAYER_SUFFIXES = ("DecoderLayer", "EncoderLayer")
OPTIMIZER_FILE = "optimizer.pt"


def require_engine(config: TrainConfig) -> None:
    """Fail before any work, naming the package a configured engine needs."""
    if importlib.util.find_spec("accelerate") is None:
        raise RuntimeError("training needs the 'accelerate' package, which is not installed: "
                           "pip install 'keyseg[train]' (or pip install accelerate)")
    if config.distributed.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError(f"distributed: '{config.distributed}' needs the 'deepspeed' package, which is not "
                           "installed: pip install deepspeed (or choose ddp or fsdp)")
    if config.distributed == "fsdp" and not torch.distributed.is_available():
        raise RuntimeError("distributed: 'fsdp' needs a torch build with torch.distributed, which this one lacks")


def resolve_precision(precision: str) -> str:
    """accelerate's mixed_precision value; 'auto' = bf16 where supported, else fp16 on GPU, none on CPU."""
    if precision != "auto":
        return PRECISIONS[precision]
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(config: TrainConfig):
    """An Accelerator for the configured backend (DeepSpeed imported only when chosen)."""
    require_engine(config)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs: dict = {}
    mixed = resolve_precision(config.precision)
    if config.distributed.startswith("deepspeed"):
        from accelerate.utils import DeepSpeedPlugin

        plugin = DeepSpeedPlugin(
            zero_stage=3 if config.distributed.endswith("3") else 2,
            gradient_accumulation_steps=config.grad_accum,
            gradient_clipping=config.max_grad_norm or None,
        )
        # we feed our own DataLoader (it is never `prepare`d), so DeepSpeed cannot infer the micro-batch
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        kwargs["deepspeed_plugin"] = plugin
    # find_unused_parameters: SAM's IoU head is trainable but not in the loss, and cross-attention is
    # skipped for batches without [KEY]; DDP would otherwise stop with "unused parameters"
    kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # accelerate only sets up gloo for a CPU job launched by torchrun when told it is a CPU job
    multi_cpu = not torch.cuda.is_available() and world > 1
    return Accelerator(
        cpu=multi_cpu,
        # FSDP casts with its own MixedPrecision policy (wrap_fsdp); accelerate's autocast stays off
        mixed_precision="no" if config.distributed == "fsdp" and world > 1 else mixed,
        gradient_accumulation_steps=config.grad_accum,
        **kwargs,
    )


def uses_fsdp(config: TrainConfig, accelerator) -> bool:
    """FSDP shards only when several processes train; one process runs the plain model."""
    return config.distributed == "fsdp" and accelerator.num_processes > 1


def prepare(accelerator, config: TrainConfig, module: nn.Module, make_optimizer):
    """(model, optimizer) ready to train: FSDP-wrapped by torch, or prepared by accelerate.

    The optimizer is made after wrapping, over the parameters FSDP exposes (use_orig_params).
    """
    if not uses_fsdp(config, accelerator):
        return accelerator.prepare(module, make_optimizer(module))
    wrapped = wrap_fsdp(module, accelerator.device, resolve_precision(config.precision))
    return wrapped, accelerator.prepare(make_optimizer(wrapped))


def wrap_fsdp(module: nn.Module, device: torch.device, mixed: str) -> nn.Module:
    """FSDP over the decoder/encoder layers (one unit each) and a root unit holding the rest."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    layers = {type(m) for m in module.modules() if type(m).__name__.endswith(FSDP_LAYER_SUFFIXES)}
    half = HALF.get(mixed)
    policy = MixedPrecision(param_dtype=half, reduce_dtype=half, buffer_dtype=half) if half else None
    # every rank builds bit-identical weights from the seeds, so no broadcast of module states is needed
    return FSDP(module, auto_wrap_policy=ModuleWrapPolicy(layers), use_orig_params=True, mixed_precision=policy,
                device_id=torch.device("cpu") if device.type == "cpu" else device, limit_all_gathers=True)


def input_dtype(accelerator, config: TrainConfig) -> torch.dtype:
    """The dtype the model computes in, which the batch's pixels must have: the half type under
    DeepSpeed (which casts the weights) and FSDP (whose policy casts them); float32 under DDP, where
    autocast casts inside the forward."""
    mixed = resolve_precision(config.precision)
    if config.distributed.startswith("deepspeed") or uses_fsdp(config, accelerator):
        return HALF.get(mixed, torch.float32)
    return torch.float32


def clip_gradients(accelerator, model: nn.Module, parameters: list, max_norm: float) -> float:
    """Clip by the global norm; FSDP computes it over all shards, others through accelerate."""
    if is_fsdp(model):
        return float(model.clip_grad_norm_(max_norm))
    norm = accelerator.clip_grad_norm_(parameters, max_norm)
    return float(norm) if norm is not None else float("nan")


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return isinstance(model, FSDP)


def is_sharded(accelerator, model: nn.Module) -> bool:
    """Whether the optimizer state is split over ranks (saved by the engine, not by us)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED or is_fsdp(model)


def params_partitioned(accelerator, model: nn.Module) -> bool:
    """Whether each rank holds only part of the weights (FSDP, ZeRO-3): no per-rank weight digest."""
    plugin = accelerator.state.deepspeed_plugin
    return is_fsdp(model) or (plugin is not None and plugin.zero_stage == 3)


@contextlib.contextmanager
def full_parameters(accelerator, model: nn.Module) -> Iterator[nn.Module]:
    """Yield the unwrapped model with every parameter complete on the main process (ZeRO-3 and FSDP
    gather them; all ranks must enter)."""
    from accelerate.utils import DistributedType

    inner = accelerator.unwrap_model(model)
    plugin = accelerator.state.deepspeed_plugin
    if accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
            yield inner
    elif is_fsdp(model):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, rank0_only=True, offload_to_cpu=_offload(model)):
            yield inner
    else:
        yield inner


def save_engine_state(accelerator, model: nn.Module, optimizer, folder: Path) -> None:
    """Sharded optimizer state (every rank calls this): DeepSpeed's own files, or FSDP's optimizer
    state gathered into one `optimizer.pt` keyed by parameter name (any world size can resume it)."""
    if is_fsdp(model):
        state = _fsdp_optimizer_state(model, optimizer)
        if accelerator.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, folder / OPTIMIZER_FILE)
    else:
        model.save_checkpoint(str(folder), tag="state", exclude_frozen_parameters=True)


def load_engine_state(accelerator, model: nn.Module, optimizer, folder: Path) -> None:
    if is_fsdp(model):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        # tensors, numbers and strings only (no arbitrary unpickling)
        state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        with _fsdp_full_state(model):
            optimizer.optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model, optimizer.optimizer, state))
    else:
        model.load_checkpoint(str(folder), tag="state", load_module_strict=False, load_optimizer_states=True,
                              load_lr_scheduler_states=False)


def _fsdp_optimizer_state(model: nn.Module, optimizer) -> dict:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with _fsdp_full_state(model):
        return FSDP.optim_state_dict(model, optimizer.optimizer)


def _fsdp_full_state(model: nn.Module):
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    # rank0_only=False: every rank holds the (small: trainable parts only) optimizer state in full
    offload = _offload(model)
    return FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT,
                                FullStateDictConfig(offload_to_cpu=offload, rank0_only=False),
                                FullOptimStateDictConfig(offload_to_cpu=offload, rank0_only=False))


def _offload(model: nn.Module) -> bool:
    """Gather into host memory when the weights live on a GPU. On a CPU there is nothing to offload,
    and torch's FSDP then hands back empty storages (a segfault when they are written)."""
    return next(model.parameters()).device.type != "cpu"
