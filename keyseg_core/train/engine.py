"""The distributed engine, through accelerate: DDP, DeepSpeed ZeRO-2/3 or FSDP, picked by the config.

accelerate reads the launcher's environment (torchrun or `accelerate launch`), so the same command
runs on one CPU, one GPU, eight GPUs or several nodes. The helpers below hide the one thing the
sharded engines change for us: parameters must be gathered before the weights are written, and the
optimizer state is sharded, so it goes through the engine's own checkpoint format.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .config import TrainConfig

PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def resolve_precision(precision: str) -> str:
    """accelerate's mixed_precision value; 'auto' = bf16 where supported, else fp16 on GPU, none on CPU."""
    if precision != "auto":
        return PRECISIONS[precision]
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def make_accelerator(config: TrainConfig):
    """An Accelerator for the configured backend (DeepSpeed and FSDP imported only when chosen)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    kwargs: dict = {}
    if config.distributed.startswith("deepspeed"):
        from accelerate.utils import DeepSpeedPlugin, is_deepspeed_available

        if not is_deepspeed_available():
            raise RuntimeError(f"distributed: '{config.distributed}' needs DeepSpeed: pip install deepspeed")
        plugin = DeepSpeedPlugin(
            zero_stage=3 if config.distributed.endswith("3") else 2,
            gradient_accumulation_steps=config.grad_accum,
            gradient_clipping=config.max_grad_norm or None,
        )
        # we feed our own DataLoader (it is never `prepare`d), so DeepSpeed cannot infer the micro-batch
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = config.batch_size
        kwargs["deepspeed_plugin"] = plugin
    elif config.distributed == "fsdp":
        from accelerate.utils import FullyShardedDataParallelPlugin

        # use_orig_params: frozen and trainable parameters share FSDP units (LoRA inside frozen layers)
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(use_orig_params=True, state_dict_type="FULL_STATE_DICT")
    # find_unused_parameters: SAM's IoU head is trainable but not in the loss, and cross-attention is
    # skipped for batches without [KEY]; DDP would otherwise stop with "unused parameters"
    kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    # accelerate only sets up gloo for a CPU job launched by torchrun when told it is a CPU job
    multi_cpu = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(
        cpu=multi_cpu,
        mixed_precision=resolve_precision(config.precision),
        gradient_accumulation_steps=config.grad_accum,
        **kwargs,
    )


def is_sharded(accelerator) -> bool:
    """Whether the optimizer state is split over ranks (saved by the engine, not by us)."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


@contextlib.contextmanager
def full_parameters(accelerator, model: nn.Module) -> Iterator[nn.Module]:
    """Yield the unwrapped model with every parameter complete (ZeRO-3 and FSDP gather them; all ranks enter)."""
    from accelerate.utils import DistributedType

    inner = accelerator.unwrap_model(model)
    plugin = accelerator.state.deepspeed_plugin
    if accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(inner.parameters()), modifier_rank=None):
            yield inner
    elif accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, writeback=False, offload_to_cpu=True):
            yield inner
    else:
        yield inner


def save_engine_state(accelerator, model: nn.Module, optimizer, folder: Path) -> None:
    """Sharded optimizer state in the engine's own format (every rank calls this)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        model.save_checkpoint(str(folder), tag="state", exclude_frozen_parameters=True)
    elif accelerator.distributed_type == DistributedType.FSDP:
        from accelerate.utils import save_fsdp_optimizer

        save_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer.optimizer, model, str(folder))
    else:
        raise RuntimeError(f"save_engine_state: engine {accelerator.distributed_type} is not sharded")


def load_engine_state(accelerator, model: nn.Module, optimizer, folder: Path) -> None:
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        model.load_checkpoint(str(folder), tag="state", load_module_strict=False, load_optimizer_states=True,
                              load_lr_scheduler_states=False)
    elif accelerator.distributed_type == DistributedType.FSDP:
        from accelerate.utils import load_fsdp_optimizer

        load_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer.optimizer, model, str(folder))
    else:
        raise RuntimeError(f"load_engine_state: engine {accelerator.distributed_type} is not sharded")
