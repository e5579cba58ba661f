"""SAM for KeySeg: a frozen image encoder and a trainable mask decoder prompted by S_hat.

Built on transformers' SamModel (same architecture as segment-anything, no torchvision). Sizes are a
registry of builders; original segment-anything checkpoints load through `pretrained.sam_checkpoint`.
Preprocessing and postprocessing follow SAM exactly: resize the longest side to `image_size`
(bilinear), normalise 0-255 pixels with SAM's mean/std, pad bottom-right; mask logits are upsampled to
the padded input, cropped to the resized image and resized to the original size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from transformers import SamConfig as HfSamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

from keyseg_core.config.model import SamConfig
from keyseg_core.modeling.cnn_encoder import cnn_encoder_for
from keyseg_core.modeling.sam_attention import use_sdpa_attention
from keyseg_core.modeling.stems import conv_stem_like

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# transformers draws a random SAM's Fourier position matrix with std = encoder width / 2 (64 for a
# 128-wide encoder, 384 for ViT-B): frequencies so high that the encoding of a point or grid cell is
# noise, and point/box prompts (and the decoder's spatial attention) cannot learn. segment-anything
# draws it from N(0, 1) and keeps it fixed; random SAMs here do the same.
RANDOM_PE_STD = 1.0
# transformers' SamVisionConfig defaults to a 1e-10 init range, which makes a randomly initialised
# encoder output the same embedding everywhere; random encoders use the usual 0.02 instead.
RANDOM_INIT_STD = 0.02


def _vit(hidden: int, depth: int, heads: int, global_attn: list[int]) -> tuple[dict, dict]:
    return dict(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
                global_attn_indexes=global_attn, output_channels=256), {}


# segment-anything's sizes (embed dim, depth, heads, global-attention blocks), and a 64-wide test size:
# (SamVisionConfig kwargs, SamMaskDecoderConfig kwargs)
SAM_SIZES: dict[str, tuple[dict, dict]] = {
    "vit_b": _vit(768, 12, 12, [2, 5, 8, 11]),
    "vit_l": _vit(1024, 24, 16, [5, 11, 17, 23]),
    "vit_h": _vit(1280, 32, 16, [7, 15, 23, 31]),
    "tiny": (
        dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, global_attn_indexes=[1], window_size=4,
             output_channels=64, mlp_dim=128, num_pos_feats=32),
        dict(hidden_size=64, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=64),
    ),
}


def sam_config(size: str, image_size: int, vision: dict | None = None, decoder: dict | None = None) -> HfSamConfig:
    """transformers' SamConfig of a named size with optional overrides; the prompt width follows output_channels."""
    base_vision, base_decoder = SAM_SIZES[size]
    vision_kw = {**base_vision, **(vision or {}), "image_size": image_size}
    vision_kw.setdefault("initializer_range", RANDOM_INIT_STD)
    width = vision_kw["output_channels"]
    decoder_kw = {**base_decoder, **(decoder or {}), "hidden_size": width}
    prompt_kw = dict(hidden_size=width, image_size=image_size)
    if "patch_size" in vision_kw:
        prompt_kw["patch_size"] = vision_kw["patch_size"]
    return HfSamConfig(
        vision_config=SamVisionConfig(**vision_kw),
        prompt_encoder_config=SamPromptEncoderConfig(**prompt_kw),
        mask_decoder_config=SamMaskDecoderConfig(**decoder_kw),
    )


def spec_config(spec: SamConfig) -> HfSamConfig:
    return sam_config(spec.size, spec.image_size, spec.vision_config, spec.mask_decoder_config)


def build_sam(spec: SamConfig, dtype: torch.dtype | None = None, device: str | torch.device | None = None
              ) -> SamModel:
    """SamModel from the spec: random init, an original .pth, converted .safetensors, or hub/dir;
    its encoder's attention runs through SDPA with the relative-position bias as the mask (exact,
    see sam_attention).

    Random weights are drawn on the CPU in float32 (from the caller's seed) and left there for the
    caller to move. Pretrained weights go straight into `dtype` on `device` (default: float32, CPU):
    the skeleton is built on the meta device, so SAM-H (632 M parameters) never exists as a float32
    copy in host memory on its way to a GPU.
    """
    model = _build_sam(spec, dtype or torch.float32, torch.device(device or "cpu"))
    use_sdpa_attention(model)
    return model


def _build_sam(spec: SamConfig, dtype: torch.dtype, device: torch.device) -> SamModel:
    weights = spec.weights
    if weights == "random":
        model = SamModel(spec_config(spec))
        with torch.no_grad():  # segment-anything's PositionEmbeddingRandom: N(0, 1), not N(0, width/2)
            model.shared_image_embedding.positional_embedding.normal_(0.0, RANDOM_PE_STD)
        if spec.stem == "conv":  # drawn from the seed the caller set (build_model: backbone.seed + 2)
            patch = model.vision_encoder.patch_embed
            seed = (torch.initial_seed() + 11) % 2**63  # torch.seed() may have set any 64-bit value
            try:
                patch.projection = conv_stem_like(patch.projection, seed=seed)
            except ValueError as exc:
                raise ValueError(f"stem: {exc} (vision_config.patch_size)") from exc
        if spec.encoder == "cnn":  # its own seed, after the stem's, from the same caller-set seed
            seed = (torch.initial_seed() + 13) % 2**63
            try:
                model.vision_encoder = cnn_encoder_for(model.config.vision_config, seed, spec.cnn_width)
            except ValueError as exc:
                raise ValueError(f"encoder: {exc}") from exc
        return model
    path = Path(weights)
    if path.suffix in (".pth", ".pt", ".safetensors"):
        from keyseg_core.pretrained.sam_checkpoint import load_sam_state_dict

        with torch.device("meta"):
            model = SamModel(spec_config(spec))
        state = load_sam_state_dict(path, device)
        expected = model.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:
            raise ValueError(
                f"{path}: does not fit SAM '{spec.size}': missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
        wrong = [f"{k} {tuple(state[k].shape)} (SAM '{spec.size}' has {tuple(v.shape)})"
                 for k, v in expected.items() if state[k].shape != v.shape]
        if wrong:
            raise ValueError(f"{path}: does not fit SAM '{spec.size}': {', '.join(wrong[:3])}")
        model.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in state.items()}, assign=True)
        model.tie_weights()  # assign replaced the positional matrix the prompt encoder shares
        return model
    return SamModel.from_pretrained(weights, dtype=dtype, device_map={"": device})


@dataclass(frozen=True)
class SamImage:
    """One image prepared for SAM: padded pixels plus the sizes needed to undo the resize."""

    pixels: torch.Tensor  # (3, S, S) float, normalised and padded
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]


def resized_shape(h: int, w: int, long_side: int) -> tuple[int, int]:
    """Shape after resizing the longest side to `long_side` (rounded half up, as SAM does)."""
    scale = long_side / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def resize_for_sam(image: np.ndarray, image_size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> the longest side resized to `image_size` (bilinear), still uint8."""
    rh, rw = resized_shape(*image.shape[:2], image_size)
    return np.array(Image.fromarray(image).resize((rw, rh), Image.BILINEAR))


def normalise_pad_sam(resized: torch.Tensor, image_size: int) -> torch.Tensor:
    """(..., rh, rw, 3) uint8 resized image(s) -> (..., 3, S, S) float: SAM's mean/std, padded
    bottom-right; on the input's device, so training normalises whole batches on the GPU."""
    x = resized.float().movedim(-1, -3)  # HxWx3 -> 3xHxW
    mean = torch.tensor(PIXEL_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(PIXEL_STD, device=x.device)[:, None, None]
    x = (x - mean) / std
    return F.pad(x, (0, image_size - x.shape[-1], 0, image_size - x.shape[-2]))


def preprocess_sam(image: np.ndarray, image_size: int) -> SamImage:
    """HxWx3 uint8 RGB -> SAM input (resize longest side, normalise, pad bottom-right)."""
    resized = resize_for_sam(image, image_size)
    pixels = normalise_pad_sam(torch.from_numpy(resized), image_size)
    return SamImage(pixels, resized.shape[:2], image.shape[:2])


def postprocess_masks(
    low_res: torch.Tensor, resized_hw: tuple[int, int], original_hw: tuple[int, int], image_size: int
) -> torch.Tensor:
    """(N, h, w) low-res logits -> (N, H, W) logits at the original image size."""
    x = F.interpolate(low_res[:, None].float(), (image_size, image_size), mode="bilinear", align_corners=False)
    x = x[..., : resized_hw[0], : resized_hw[1]]
    x = F.interpolate(x, original_hw, mode="bilinear", align_corners=False)
    return x[:, 0]


class ImageByImageDecoding:
    """`decode_batch` for segmenters whose decoder takes one image per call (exported ONNX / TensorRT
    graphs, graphs compiled for static shapes): the batch's images go through `decode` in turn."""

    def decode_batch(self, embeddings: torch.Tensor, prompts: torch.Tensor,
                     mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if mask_inputs is not None and len(embeddings) != 1:
            raise ValueError("a previous-frame mask prompt belongs to one image; got a batch of "
                             f"{len(embeddings)}")
        extra = {} if mask_inputs is None else {"mask_inputs": mask_inputs}
        decoded = [self.decode(embeddings[i:i + 1], prompts[i], **extra) for i in range(len(embeddings))]
        return torch.stack([m for m, _ in decoded]), torch.stack([q for _, q in decoded])


class SamSegmenter(nn.Module):
    """SAM's encoder (frozen by the caller), prompt encoder and mask decoder, driven by S_hat prompts."""

    def __init__(self, sam: SamModel, image_size: int) -> None:
        super().__init__()
        self.sam = sam
        self.image_size = image_size

    @property
    def prompt_dim(self) -> int:
        return self.sam.config.mask_decoder_config.hidden_size

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, S/16, S/16) image embeddings."""
        return self.sam.get_image_embeddings(pixels)

    # the decoder takes an earlier frame's low-res mask logits as a dense prompt (`mask_inputs`)
    accepts_mask_prompt = True

    def decode(self, embedding: torch.Tensor, prompts: torch.Tensor,
               mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding (1, C, h, w) and its N prompts (N, C) -> (N, 4h, 4w) logits, (N,) IoU preds.

        S_hat is the only sparse prompt (no points or boxes), single-mask output as in LISA. Without
        `mask_inputs` the dense prompt is SAM's no-mask embedding; with (1, 4h, 4w) low-res logits (an
        earlier frame's mask) it is SAM's embedding of that mask, shared by all N prompts.
        """
        masks, iou = self.decode_batch(embedding, prompts[None], mask_inputs)
        return masks[0], iou[0]

    def decode_batch(self, embeddings: torch.Tensor, prompts: torch.Tensor,
                     mask_inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """B images' embeddings (B, C, h, w) and N prompts each -> (B, N, 4h, 4w) logits, (B, N).

        prompts: (B, N, C), one S_hat token per prompt, or (B, N, T, C) prompt sets of T tokens (stage
        1's point and box prompts from SAM's prompt encoder). One decoder call for every prompt of every
        image: each (image, prompt) pair is decoded on its own, so rows that pad an image's prompts to N
        change nothing in the others (training drops them).
        """
        b, n = prompts.shape[:2]
        sparse = prompts[:, :, None, :] if prompts.dim() == 3 else prompts  # (B, N, T, C)
        if mask_inputs is None:
            _, dense = self.sam.prompt_encoder(None, None, None, None)  # no-mask embedding (1, C, h, w)
        else:
            dense = self.sam.prompt_encoder.mask_embed(mask_inputs.reshape(1, 1, *mask_inputs.shape[-2:])
                                                       .to(embeddings.dtype))
        positional = self.sam.get_image_wide_positional_embeddings().to(embeddings.dtype)
        masks, iou = self.sam.mask_decoder(
            image_embeddings=embeddings,
            image_positional_embeddings=positional.expand(b, -1, -1, -1),
            sparse_prompt_embeddings=sparse.to(embeddings.dtype),
            dense_prompt_embeddings=dense.to(embeddings.dtype),
            multimask_output=False,
        )[:2]
        return masks.reshape(b, n, *masks.shape[-2:]), iou.reshape(b, n)
