"""Convert original segment-anything checkpoints (sam_vit_b/l/h_*.pth) to transformers SamModel keys.

The .pth files are plain state dicts; they are read with `torch.load(weights_only=True)`, which
refuses any pickled code. Key renames are the architectural correspondence between the two
implementations (same tensors, different module names); the prompt encoder's Gaussian positional
matrix feeds both of SamModel's copies of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# (pattern on segment-anything names, replacement in transformers names), applied in order.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^image_encoder\.", "vision_encoder."),
    (r"^(vision_encoder)\.patch_embed\.proj\.", r"\1.patch_embed.projection."),
    (r"^(vision_encoder)\.blocks\.(\d+)\.norm(\d)\.", r"\1.layers.\2.layer_norm\3."),
    (r"^(vision_encoder)\.blocks\.", r"\1.layers."),
    (r"^(vision_encoder\.neck)\.0\.", r"\1.conv1."),
    (r"^(vision_encoder\.neck)\.1\.", r"\1.layer_norm1."),
    (r"^(vision_encoder\.neck)\.2\.", r"\1.conv2."),
    (r"^(vision_encoder\.neck)\.3\.", r"\1.layer_norm2."),
    (r"^(prompt_encoder)\.point_embeddings\.", r"\1.point_embed."),
    (r"^(prompt_encoder)\.mask_downscaling\.0\.", r"\1.mask_embed.conv1."),
    (r"^(prompt_encoder)\.mask_downscaling\.1\.", r"\1.mask_embed.layer_norm1."),
    (r"^(prompt_encoder)\.mask_downscaling\.3\.", r"\1.mask_embed.conv2."),
    (r"^(prompt_encoder)\.mask_downscaling\.4\.", r"\1.mask_embed.layer_norm2."),
    (r"^(prompt_encoder)\.mask_downscaling\.6\.", r"\1.mask_embed.conv3."),
    (r"^(mask_decoder\.transformer\.layers\.\d+)\.norm(\d)\.", r"\1.layer_norm\2."),
    (r"^(mask_decoder\.transformer)\.norm_final_attn\.", r"\1.layer_norm_final_attn."),
    (r"^(mask_decoder)\.output_upscaling\.0\.", r"\1.upscale_conv1."),
    (r"^(mask_decoder)\.output_upscaling\.1\.", r"\1.upscale_layer_norm."),
    (r"^(mask_decoder)\.output_upscaling\.3\.", r"\1.upscale_conv2."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.0\.", r"\1.proj_in."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.1\.", r"\1.layers.0."),
    (r"^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.2\.", r"\1.proj_out."),
)
_POS_MATRIX = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_POS_TARGETS = ("prompt_encoder.shared_embedding.positional_embedding", "shared_image_embedding.positional_embedding")
# buffers some exports include; SamModel computes these itself
_SKIP = ("pixel_mean", "pixel_std")


def convert_sam_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """segment-anything names -> transformers SamModel names."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name in _SKIP:
            continue
        if name == _POS_MATRIX:
            for target in _POS_TARGETS:
                out[target] = tensor
            continue
        new = name
        for pattern, repl in _RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = tensor
    return out


def load_sam_state_dict(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read an original .pth (weights only) or a converted .safetensors, returning SamModel keys.

    A .safetensors file is read straight onto `device`; a .pth is memory-mapped, so its tensors are
    read from disk as they are converted rather than held twice in host memory."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SAM checkpoint")
    if path.suffix == ".safetensors":
        return load_file(str(path), device=str(torch.device(device)))
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # a legacy (pre-zip) torch.save file cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unpickling errors vary; one clear message
        raise ValueError(f"{path}: not a weights-only SAM state dict ({exc})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    if not any(k.startswith("image_encoder.") for k in state):
        raise ValueError(f"{path}: no 'image_encoder.*' keys; not a segment-anything checkpoint")
    return convert_sam_state_dict(state)


def convert_file(src: str | Path, dst: str | Path) -> int:
    """Convert a .pth to a .safetensors file (written to a temp name, then renamed). Returns tensor count."""
    state = {k: v.contiguous() for k, v in load_sam_state_dict(src).items()}
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    # the two positional copies share storage; safetensors needs distinct tensors
    save_file({k: v.clone() for k, v in state.items()}, str(tmp), metadata={"source": Path(src).name})
    tmp.replace(dst)
    return len(state)
