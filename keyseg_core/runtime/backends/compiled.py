"""The `compile` backend: torch.compile of the per-frame graphs (SAM encoder, mask decoder, vision
tower), with CUDA graphs on CUDA where the shapes are static ("reduce-overhead").

torch.compile compiles lazily at the first call, so `load_compiled` runs every compiled graph once
on dummy inputs at load: a compiler that fails (no C++ toolchain, an unsupported op) fails there,
with its message, and the model is left untouched.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from keyseg_core.modeling.keyseg import KeySegModel, image_features
from keyseg_core.modeling.sam import ImageByImageDecoding, SamSegmenter

# CUDA graphs replay fixed shapes: the encoder at SAM's image size and the decoder at one prompt are
# captured once; another prompt count is compiled (and captured) on first use.
CUDA_MODE = "reduce-overhead"
CPU_MODE = "default"


class CompiledSamSegmenter(ImageByImageDecoding, nn.Module):
    """A SamSegmenter whose encode and decode run compiled; same interface, same weights."""

    accepts_mask_prompt = True

    def __init__(self, sam: SamSegmenter, mode: str, dynamo_backend: str = "inductor") -> None:
        super().__init__()
        self.inner = sam
        self.image_size = sam.image_size
        self.mode = mode
        self._encode = torch.compile(sam.encode, mode=mode, backend=dynamo_backend, dynamic=False)
        self._decode = torch.compile(sam.decode, mode=mode, backend=dynamo_backend, dynamic=False)
        self._cuda_graphs = mode == CUDA_MODE

    @property
    def prompt_dim(self) -> int:
        return self.inner.prompt_dim

    @property
    def sam(self):
        return self.inner.sam

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._own(self._encode(pixels))

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor,
               mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask_inputs is not None:  # a rarer call: eager, rather than one more captured graph
            return self.inner.decode(embedding, prompts, mask_inputs=mask_inputs)
        masks, iou = self._decode(embedding, prompts)
        return self._own(masks), self._own(iou)

    def _own(self, x: torch.Tensor) -> torch.Tensor:
        """CUDA-graph outputs live in the graph's memory pool and are overwritten by the next replay."""
        return x.clone() if self._cuda_graphs else x


def load_compiled(model: KeySegModel, device: torch.device, *, dynamo_backend: str = "inductor"
                  ) -> tuple[str, Callable, CompiledSamSegmenter]:
    """Compile SAM and the vision tower and warm them up: (reason, vision callable, SAM segmenter)."""
    mode = CUDA_MODE if device.type == "cuda" else CPU_MODE
    sam = model.sam if isinstance(model.sam, SamSegmenter) else None
    if sam is None:
        raise RuntimeError(f"compile needs the torch SAM, the model has {type(model.sam).__name__}")
    compiled = CompiledSamSegmenter(sam, mode, dynamo_backend)
    llava = model.llava.model
    vision = torch.compile(lambda pixels: image_features(llava, pixels), mode=mode, backend=dynamo_backend,
                           dynamic=False)
    param = next(sam.parameters())
    clip = model.llava.config.vision_config.image_size
    try:
        with torch.inference_mode():
            embedding = compiled.encode(torch.zeros(1, 3, sam.image_size, sam.image_size, dtype=param.dtype,
                                                    device=device))
            compiled.decode(embedding, torch.zeros(1, sam.prompt_dim, dtype=param.dtype, device=device))
            features = vision(torch.zeros(1, 3, clip, clip, dtype=param.dtype, device=device))
    except Exception as exc:
        raise RuntimeError(f"torch.compile failed while warming up ({type(exc).__name__}: "
                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    cloned = (lambda pixels: vision(pixels).clone()) if mode == CUDA_MODE else vision
    del features
    graphs = " with CUDA graphs" if mode == CUDA_MODE else ""
    reason = f"torch.compile ({dynamo_backend}, mode {mode}{graphs}) of the SAM encoder, decoder and vision tower"
    return reason, cloned, compiled
