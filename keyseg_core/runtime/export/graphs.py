"""The exportable parts of KeySeg, as thin torch modules that call the real SAM code.

Each part is a `GraphSpec`: a wrapper module whose forward is exactly what `KeySegModel.run` calls
(`SamSegmenter.encode` / `SamSegmenter.decode`), the named inputs and outputs with their dynamic
axes, and example inputs for tracing and for the onnxruntime check. Nothing here re-implements a
network part, so an exported graph cannot drift from the torch model.

The vision tower (CLIP + projector) is a graph of its own (`vision_graph_spec`), exported apart
from SAM because it belongs to the LLaVA model. The LLM and the fusion module stay in torch: the
fusion consumes the LLM's hidden states in the same process, and its branch for samples without a
[KEY] is data dependent, which a trace would freeze.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from keyseg_core.modeling.sam import SamSegmenter

Dim = int | str  # a fixed size, or the name of a dynamic axis


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output: its shape (dynamic axes by name)."""

    name: str
    shape: tuple[Dim, ...]

    def dynamic_axes(self) -> dict[int, str]:
        return {i: d for i, d in enumerate(self.shape) if isinstance(d, str)}


@dataclass(frozen=True)
class GraphSpec:
    """One exportable part: the module to trace, its tensors, and example inputs of a given dynamic size."""

    name: str
    module: nn.Module
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    example: Callable[[int, torch.dtype], tuple[torch.Tensor, ...]]  # dynamic size, dtype -> inputs
    export_size: int  # dynamic size traced at export
    check_sizes: tuple[int, ...]  # dynamic sizes checked in onnxruntime (differ from export_size)


class SamEncoderGraph(nn.Module):
    """(B, 3, S, S) normalised, padded pixels -> (B, C, S/16, S/16) image embeddings."""

    def __init__(self, sam: SamSegmenter) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.sam.encode(pixels)


class SamDecoderGraph(nn.Module):
    """One image's (1, C, h, w) embedding + N prompts S_hat (N, C) -> (N, 4h, 4w) logits, (N,) IoU."""

    def __init__(self, sam: SamSegmenter) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, image_embeddings: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sam.decode(image_embeddings, prompts)


class VisionTowerGraph(nn.Module):
    """(B, 3, s, s) CLIP-normalised pixels -> (B, n_img, d) visual tokens (tower + projector)."""

    def __init__(self, llava_model: nn.Module) -> None:
        super().__init__()
        self.llava_model = llava_model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        from keyseg_core.modeling.keyseg import image_features

        return image_features(self.llava_model, pixels)


PARTS = ("sam_encoder", "decoder")
VISION_PART = "vision_tower"


def vision_graph_spec(llava_model: nn.Module) -> GraphSpec:
    """The GraphSpec of a LlavaModel's vision tower + projector (its language model is never called).

    One image per call: transformers' LLaVA returns its features as a per-image list, which a trace
    unrolls at the traced batch size, so the graph's batch is fixed at 1 (runners loop over images).
    """
    size = llava_model.config.vision_config.image_size
    tokens = (size // llava_model.config.vision_config.patch_size) ** 2
    width = llava_model.config.text_config.hidden_size

    def pixels(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, size, size, dtype=dtype),)

    return GraphSpec(
        VISION_PART, VisionTowerGraph(llava_model),
        inputs=(TensorSpec("pixels", (1, 3, size, size)),),
        outputs=(TensorSpec("image_features", (1, tokens, width)),),
        example=pixels, export_size=1, check_sizes=(1,),
    )


def embedding_shape(sam: SamSegmenter) -> tuple[int, int, int]:
    """(C, h, w) of one image embedding."""
    side = sam.sam.config.vision_config.image_size // sam.sam.config.vision_config.patch_size
    return sam.prompt_dim, side, side


def graph_specs(sam: SamSegmenter) -> dict[str, GraphSpec]:
    """The GraphSpec of every exportable part of this segmenter, by part name."""
    s = sam.image_size
    c, h, w = embedding_shape(sam)

    def pixels(batch: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return (torch.randn(batch, 3, s, s, dtype=dtype),)

    def embedding_and_prompts(n: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        return torch.randn(1, c, h, w, dtype=dtype), torch.randn(n, c, dtype=dtype)

    return {
        "sam_encoder": GraphSpec(
            "sam_encoder", SamEncoderGraph(sam),
            inputs=(TensorSpec("pixels", ("batch", 3, s, s)),),
            outputs=(TensorSpec("image_embeddings", ("batch", c, h, w)),),
            example=pixels, export_size=1, check_sizes=(2,),
        ),
        "decoder": GraphSpec(
            "decoder", SamDecoderGraph(sam),
            inputs=(TensorSpec("image_embeddings", (1, c, h, w)), TensorSpec("prompts", ("num_prompts", c))),
            outputs=(
                TensorSpec("low_res_masks", ("num_prompts", 4 * h, 4 * w)),
                TensorSpec("iou_predictions", ("num_prompts",)),
            ),
            example=embedding_and_prompts, export_size=2, check_sizes=(1, 3),
        ),
    }


def parse_parts(text: str) -> tuple[str, ...]:
    """'sam_encoder,decoder' -> ('sam_encoder', 'decoder'); unknown or empty names are a ValueError."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in PARTS]
    if unknown or not names:
        raise ValueError(f"--parts '{text}': {'unknown part(s) ' + ', '.join(unknown) if unknown else 'empty'}; "
                         f"choose from {', '.join(PARTS)}")
    return tuple(dict.fromkeys(names))
