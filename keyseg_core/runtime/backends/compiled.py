"""The `compile` backend: torch.compile of the per-frame graphs (SAM encoder, mask decoder, vision
tower) and of the reasoner's LLM prefill (prompt prefix and query suffixes through a StaticCache,
`keyseg_core.inference.static_prefill`), with CUDA graphs on CUDA where the shapes are static
("reduce-overhead").

torch.compile compiles lazily at the first call, so `load_compiled` runs every compiled graph once
on dummy inputs at load: a compiler that fails (no C++ toolchain, an unsupported op) fails there,
with its message, and the model is left untouched. The LLM is warmed up at the model's own prompt
prefix length (its tokenizer and template) and the suffix bucket of a short query; other suffix
buckets and batch sizes compile on first use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from keyseg_core.inference.reasoner import split_prompt
from keyseg_core.inference.static_prefill import StaticPrefill, bucket
from keyseg_core.modeling.keyseg import KeySegModel, image_features
from keyseg_core.modeling.mllm import load_tokenizer, num_image_tokens
from keyseg_core.modeling.processor import KeySegProcessor
from keyseg_core.modeling.sam import ImageByImageDecoding, SamSegmenter

# CUDA graphs replay fixed shapes: the encoder at SAM's image size and the decoder at one prompt are
# captured once; another prompt count is compiled (and captured) on first use.
CUDA_MODE = "reduce-overhead"
CPU_MODE = "default"
WARM_QUERY = "the red cup on the table"  # a short query: its suffix bucket is the one warmed up at load


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


def prompt_lengths(model: KeySegModel, query: str = WARM_QUERY) -> tuple[int, int]:
    """(prefix, suffix) token counts of `query`'s prompt + forced answer, by the model's own tokenizer
    and template (the tokenizer `build_model` loads for it)."""
    llava = model.llava
    processor = KeySegProcessor(load_tokenizer(model.config.backbone), model.config,
                                clip_size=llava.config.vision_config.image_size,
                                num_image_tokens=num_image_tokens(llava), sam_size=model.config.sam.image_size)
    prefix, rest = split_prompt(processor, query, processor.answer_ids(model.config.answer))
    return len(prefix), len(rest)


def _warm_up_failed(exc: Exception, what: str = "") -> RuntimeError:
    """One line: the failure's exception type and first line (the cause stays chained). Dynamo wraps
    what a compiler backend raised in a BackendCompilerFailed whose first line names only the backend:
    the backend's own exception is the one said."""
    inner = getattr(exc, "inner_exception", None)
    cause = inner if isinstance(inner, BaseException) else exc
    text = str(cause).strip()
    first = text.splitlines()[0] if text else ""
    return RuntimeError(f"torch.compile failed while warming up{what} ({type(cause).__name__}: {first})")


def compile_llm(model: KeySegModel, device: torch.device, mode: str, dynamo_backend: str = "inductor"
                ) -> tuple[StaticPrefill, str]:
    """The reasoner's static-cache LLM runner, compiled and warmed up: (runner, what it compiled).

    fullgraph first; a graph break (dynamo's Unsupported) is retried with graph breaks allowed.
    Raises RuntimeError (one line, the cause chained) when it cannot compile.
    """
    language_model = model.llava.model.language_model
    param = next(language_model.parameters())
    prefix, suffix = prompt_lengths(model)
    for fullgraph in (True, False):
        runner = StaticPrefill(language_model, compile_mode=mode, dynamo_backend=dynamo_backend,
                               fullgraph=fullgraph)
        try:
            with torch.inference_mode():
                runner.warm_up(prefix, suffix, dtype=param.dtype, device=device)
        except Exception as exc:
            if fullgraph and isinstance(exc, torch._dynamo.exc.Unsupported):
                continue
            raise _warm_up_failed(exc, " the LLM prefill") from exc
        graph = "one graph" if fullgraph else "graph breaks allowed"
        warmed = bucket(suffix, runner.suffix_buckets)
        return runner, (f"the LLM prefill (StaticCache, {graph}; prefix {prefix} tokens, suffixes padded to "
                        f"{'/'.join(map(str, runner.suffix_buckets))} tokens and batches to "
                        f"{'/'.join(map(str, runner.batch_buckets))}; warmed at batch 1 x {warmed})")
    raise AssertionError("unreachable")  # pragma: no cover


def load_compiled(model: KeySegModel, device: torch.device, *, dynamo_backend: str = "inductor", llm: bool = True
                  ) -> tuple[str, Callable, CompiledSamSegmenter, StaticPrefill | None]:
    """Compile SAM, the vision tower and (llm) the LLM prefill and warm them up: (reason, vision
    callable, SAM segmenter, LLM runner or None)."""
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
        raise _warm_up_failed(exc) from exc
    cloned = (lambda pixels: vision(pixels).clone()) if mode == CUDA_MODE else vision
    del features
    runner, what = compile_llm(model, device, mode, dynamo_backend) if llm else (None, "")
    graphs = " with CUDA graphs" if mode == CUDA_MODE else ""
    reason = f"torch.compile ({dynamo_backend}, mode {mode}{graphs}) of the SAM encoder, decoder and vision tower"
    if runner is not None:
        reason += f", and {what}"
    return reason, cloned, compiled, runner
