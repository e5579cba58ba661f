"""SAM's image encoder and mask head run by onnxruntime, behind the interface KeySegModel.run uses.

`OrtSamSegmenter` stands in for `SamSegmenter` as `model.sam` (encode, decode, image_size,
prompt_dim): the LLM and the fusion stay in torch, the SAM graphs run in onnxruntime. Tensors cross
as numpy arrays on the CPU; outputs come back on the caller's device and dtype. It is an nn.Module
without parameters only because KeySegModel registers `sam` as a child module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..export.exporter import DEFAULT_OPSET, export_sam, sam_fingerprint
from ..export.graphs import PARTS
from ..export.manifest import read_manifest
from ..offline import cache_root
from ..sam import SamSegmenter
from .ort import create_session


class OrtSamSegmenter(nn.Module):
    """Runs an export directory's sam_encoder.onnx and decoder.onnx with onnxruntime."""

    def __init__(
        self, directory: str | Path, providers: list[str] | tuple[str, ...] | None = None, threads: int | None = None
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        missing = [p for p in PARTS if p not in manifest["graphs"]]
        if missing:
            raise ValueError(f"{self.directory}: export lacks {', '.join(missing)}; re-export with --parts "
                             f"{','.join(PARTS)}")
        self.manifest = manifest
        self.image_size: int = manifest["image_size"]
        self._np_dtype = np.dtype(manifest["dtype"])
        engines = cache_root() / "trt" / manifest["fingerprint"][:16]
        self._sessions = {
            name: create_session(self.directory / manifest["graphs"][name]["file"], providers,
                                 engine_cache=engines / name, fp16=manifest["dtype"] == "float16", threads=threads)
            for name in PARTS
        }

    @property
    def prompt_dim(self) -> int:
        return self.manifest["prompt_dim"]

    @property
    def providers(self) -> list[str]:
        """Execution providers of the encoder session, in priority order."""
        return self._sessions["sam_encoder"].get_providers()

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, S/16, S/16) image embeddings."""
        (emb,) = self._sessions["sam_encoder"].run(["image_embeddings"], {"pixels": self._numpy(pixels)})
        return torch.from_numpy(emb).to(pixels.device, pixels.dtype)

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (1, C, h, w) and its N prompts (N, C) -> (N, 4h, 4w) logits, (N,) IoU preds."""
        masks, iou = self._sessions["decoder"].run(
            ["low_res_masks", "iou_predictions"],
            {"image_embeddings": self._numpy(embedding), "prompts": self._numpy(prompts)},
        )
        back = dict(device=embedding.device, dtype=embedding.dtype)
        return torch.from_numpy(masks).to(**back), torch.from_numpy(iou).to(**back)

    def _numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().to("cpu", torch.float32).numpy().astype(self._np_dtype, copy=False)


def export_cache_dir() -> Path:
    """Where exports made on demand live: $KEYSEG_CACHE/onnx, else ~/.cache/keyseg/onnx."""
    return cache_root() / "onnx"


def cached_export(sam: SamSegmenter, *, fp16: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The export directory for these SAM weights, exporting it on first use (keyed by a weight fingerprint)."""
    fingerprint = sam_fingerprint(sam, opset=opset, fp16=fp16, parts=PARTS)
    directory = export_cache_dir() / fingerprint[:16]
    if (directory / "manifest.json").is_file():
        return directory
    try:
        export_sam(sam, directory, opset=opset, parts=PARTS, fp16=fp16, info={"source": "cache"})
    except FileExistsError:  # a concurrent process finished the same export first
        read_manifest(directory)
    return directory
