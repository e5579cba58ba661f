"""The per-frame graphs run by onnxruntime: SAM's image encoder and mask head behind the interface
KeySegModel.run uses, and the vision tower as a callable.

`OrtSamSegmenter` stands in for `SamSegmenter` (encode, decode, image_size, prompt_dim) wherever the
model's SAM runs (`KeySegModel.segment(..., sam=)`, the Segmenter): the LLM and the fusion stay in
torch, the SAM graphs run in onnxruntime. Tensors cross as numpy arrays on the CPU; outputs come back
on the caller's device and dtype. It is an nn.Module without parameters, like the other stand-ins. `OrtVision` runs the
exported vision tower + projector. Exports made on demand live in the keyseg cache, keyed by a hash
of the weights; a cached export that no longer loads (a truncated or corrupt file) or whose manifest
names other weights is exported again once.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from keyseg_core.modeling.sam import ImageByImageDecoding, SamSegmenter
from keyseg_core.pretrained.offline_llm import cache_root
from keyseg_core.runtime.export.exporter import DEFAULT_OPSET, export_sam, export_vision, sam_fingerprint, vision_fingerprint
from keyseg_core.runtime.export.graphs import PARTS, VISION_PART
from keyseg_core.runtime.export.manifest import read_manifest
from keyseg_core.runtime.ort import CPU, CUDA, create_session, resolve_providers

log = logging.getLogger("keyseg.backends")


class OrtSamSegmenter(ImageByImageDecoding, nn.Module):
    """Runs an export directory's sam_encoder.onnx and decoder.onnx with onnxruntime."""

    accepts_mask_prompt = False  # the exported decoder takes S_hat only

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


class OrtVision:
    """Runs an export directory's vision_tower.onnx: (B, 3, s, s) pixels -> (B, n_img, d) features."""

    def __init__(self, directory: str | Path, providers: list[str] | tuple[str, ...] | None = None,
                 threads: int | None = None) -> None:
        self.directory = Path(directory)
        manifest = read_manifest(self.directory)
        if VISION_PART not in manifest["graphs"]:
            raise ValueError(f"{self.directory}: export lacks {VISION_PART}")
        self.manifest = manifest
        self._np_dtype = np.dtype(manifest["dtype"])
        self._session = create_session(self.directory / manifest["graphs"][VISION_PART]["file"], providers,
                                       threads=threads)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """One graph run per image (the graph's batch is 1)."""
        x = pixels.detach().to("cpu", torch.float32).numpy().astype(self._np_dtype, copy=False)
        features = [self._session.run(["image_features"], {"pixels": x[i:i + 1]})[0] for i in range(len(x))]
        return torch.from_numpy(np.concatenate(features)).to(pixels.device, pixels.dtype)


def load_onnxruntime(model, device: torch.device) -> tuple[str, OrtVision, OrtSamSegmenter]:
    """Export (or reuse) the per-frame graphs, open them and run each once.

    Returns (reason, the vision tower runner, the SAM segmenter). Sessions use CUDA where onnxruntime-gpu is installed.
    """
    fp16 = next(model.sam.parameters()).dtype == torch.float16
    providers = resolve_providers(None) if device.type == "cuda" else [CPU]
    threads = torch.get_num_threads() if providers == [CPU] else None  # as many threads as torch uses
    sam, sam_dir = _load_cached(lambda: cached_export(model.sam, fp16=fp16),
                                lambda d: OrtSamSegmenter(d, providers, threads=threads), "SAM")
    vision, vision_dir = _load_cached(lambda: cached_vision_export(model.llava.model, fp16=fp16),
                                      lambda d: OrtVision(d, providers, threads=threads), "vision tower")
    param = next(model.parameters())
    with torch.inference_mode():
        clip = model.llava.config.vision_config.image_size
        vision(torch.zeros(1, 3, clip, clip, dtype=param.dtype))
        embedding = sam.encode(torch.zeros(1, 3, sam.image_size, sam.image_size, dtype=param.dtype))
        sam.decode(embedding, torch.zeros(1, sam.prompt_dim, dtype=param.dtype))
    where = "CUDA" if CUDA in sam.providers else "CPU"
    return f"onnxruntime on the {where} ({', '.join(sam.providers)}), graphs in {sam_dir} and {vision_dir}", vision, sam


def _load_cached(export, open_, what: str):
    """(opened, directory) for a cached export; an export that fails to open is made again once."""
    directory = export()
    try:
        return open_(directory), directory
    except Exception as exc:  # noqa: BLE001 - a broken cache entry (truncated graph, bad manifest) is replaced
        log.warning("cached %s export %s does not load (%s: %s); exporting it again", what, directory,
                    type(exc).__name__, exc)
        shutil.rmtree(directory, ignore_errors=True)
    directory = export()
    return open_(directory), directory


def export_cache_dir() -> Path:
    """Where exports made on demand live: $KEYSEG_CACHE/onnx, else ~/.cache/keyseg/onnx."""
    return cache_root() / "onnx"


def cached_export(sam: SamSegmenter, *, fp16: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The export directory for these SAM weights, exporting it on first use (keyed by a weight fingerprint)."""
    fingerprint = sam_fingerprint(sam, opset=opset, fp16=fp16, parts=PARTS)
    return _cached(export_cache_dir() / fingerprint[:16], fingerprint,
                   lambda d: export_sam(sam, d, opset=opset, parts=PARTS, fp16=fp16, info={"source": "cache"}))


def cached_vision_export(llava_model, *, fp16: bool = False, opset: int = DEFAULT_OPSET) -> Path:
    """The export directory of this vision tower + projector, exporting it on first use."""
    fingerprint = vision_fingerprint(llava_model, opset=opset, fp16=fp16)
    return _cached(export_cache_dir() / f"vision-{fingerprint[:16]}", fingerprint,
                   lambda d: export_vision(llava_model, d, opset=opset, fp16=fp16, info={"source": "cache"}))


def _cached(directory: Path, fingerprint: str, export) -> Path:
    """`directory` if it holds an export of exactly these weights, else exported there now."""
    if (directory / "manifest.json").is_file():
        try:
            if read_manifest(directory).get("fingerprint") == fingerprint:
                return directory
            log.warning("cached export %s was made from other weights; exporting again", directory)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            log.warning("cached export %s is unreadable (%s); exporting again", directory, exc)
        shutil.rmtree(directory, ignore_errors=True)
    try:
        export(directory)
    except FileExistsError:  # a concurrent process finished the same export first
        read_manifest(directory)
    return directory
