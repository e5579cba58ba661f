"""SAM's encoder attention through SDPA equals transformers' eager SamVisionAttention."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import SamModel

from keyseg_core.config.model import SamConfig
from keyseg_core.modeling.sam import build_sam, sam_config
from keyseg_core.modeling.sam_attention import RelPosSdpaAttention, use_sdpa_attention


def _eager_and_sdpa(image_size: int, global_attn: list[int], dtype: torch.dtype) -> tuple[SamModel, SamModel]:
    """A tiny eager SamModel with non-zero relative-position tables, and a copy with SDPA attention."""
    torch.manual_seed(0)
    config = sam_config("tiny", image_size, vision=dict(global_attn_indexes=global_attn))
    config._attn_implementation = "eager"
    eager = SamModel(config).eval()
    with torch.no_grad():  # zero-initialised tables would make the bias vanish and the test blind to it
        for layer in eager.vision_encoder.layers:
            layer.attn.rel_pos_h.normal_()
            layer.attn.rel_pos_w.normal_()
    assert type(eager.vision_encoder.layers[0].attn).__name__ == "SamVisionAttention"
    fast = copy.deepcopy(eager)
    assert use_sdpa_attention(fast) == len(fast.vision_encoder.layers)
    return eager.to(dtype), fast.to(dtype)


# 80 px -> a 5x5 grid: window 4 pads it to 8x8 (4 windows batched); 64 px -> 4x4, one window, no padding
@pytest.mark.parametrize("image_size", [80, 64])
@pytest.mark.parametrize("global_attn", [[1], []], ids=["windowed+global", "windowed-only"])
def test_float32_matches_eager(image_size, global_attn):
    eager, fast = _eager_and_sdpa(image_size, global_attn, torch.float32)
    pixels = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        want, got = eager.get_image_embeddings(pixels), fast.get_image_embeddings(pixels)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5), float((got - want).abs().max())


def test_bfloat16_matches_eager_to_bf16_rounding():
    eager, fast = _eager_and_sdpa(80, [1], torch.bfloat16)
    pixels = torch.randn(1, 3, 80, 80, dtype=torch.bfloat16)
    with torch.no_grad():
        want, got = eager.get_image_embeddings(pixels).float(), fast.get_image_embeddings(pixels).float()
    # a few bf16 ulps (2^-8 relative) of the embedding's scale, after 2 blocks and the neck
    assert (got - want).abs().max() <= 3 * 2 ** -8 * want.abs().max()


def test_gradients_match_eager():
    """Training through the encoder (KeySeg-Tiny's stage 1) gets the same gradients."""
    eager, fast = _eager_and_sdpa(64, [1], torch.float32)
    pixels = torch.randn(1, 3, 64, 64)
    for model in (eager, fast):
        model.vision_encoder(pixels)[0].square().mean().backward()
    for (name, a), (_, b) in zip(eager.vision_encoder.named_parameters(), fast.vision_encoder.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4), name


def test_build_sam_swaps_attention_and_keeps_weight_names():
    sam = build_sam(SamConfig(size="tiny", image_size=64))
    assert all(isinstance(layer.attn, RelPosSdpaAttention) for layer in sam.vision_encoder.layers)
    names = set(SamModel(sam_config("tiny", 64)).state_dict())
    assert set(sam.state_dict()) == names  # checkpoints save and load unchanged


def test_cnn_encoder_has_nothing_to_swap():
    sam = build_sam(SamConfig(size="tiny", image_size=64, encoder="cnn"))
    assert use_sdpa_attention(sam) == 0


def test_other_grid_is_refused_by_name():
    _, fast = _eager_and_sdpa(64, [], torch.float32)
    attn = fast.vision_encoder.layers[0].attn
    with pytest.raises(ValueError, match=r"grid 3x3 .*\(image_size\)"):
        attn(torch.randn(1, 3, 3, 64))
