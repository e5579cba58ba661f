"""The segment-anything -> SamModel converter on a state dict with segment-anything's own key names."""

import pytest
import torch
from transformers import SamModel

from keyseg_core.config.model import SamConfig
from keyseg_core.modeling.sam import build_sam, sam_config
from keyseg_core.pretrained.sam_checkpoint import convert_sam_state_dict, load_sam_state_dict


def segment_anything_keys(depth: int, decoder_layers: int) -> list[str]:
    """Parameter names of segment-anything's Sam, written from its module layout."""
    keys = ["image_encoder.pos_embed", "image_encoder.patch_embed.proj.weight", "image_encoder.patch_embed.proj.bias"]
    for i in range(depth):
        b = f"image_encoder.blocks.{i}"
        keys += [f"{b}.norm1.weight", f"{b}.norm1.bias", f"{b}.attn.qkv.weight", f"{b}.attn.qkv.bias",
                 f"{b}.attn.proj.weight", f"{b}.attn.proj.bias", f"{b}.attn.rel_pos_h", f"{b}.attn.rel_pos_w",
                 f"{b}.norm2.weight", f"{b}.norm2.bias", f"{b}.mlp.lin1.weight", f"{b}.mlp.lin1.bias",
                 f"{b}.mlp.lin2.weight", f"{b}.mlp.lin2.bias"]
    keys += ["image_encoder.neck.0.weight", "image_encoder.neck.1.weight", "image_encoder.neck.1.bias",
             "image_encoder.neck.2.weight", "image_encoder.neck.3.weight", "image_encoder.neck.3.bias"]
    keys += ["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", "prompt_encoder.not_a_point_embed.weight",
             "prompt_encoder.no_mask_embed.weight"]
    keys += [f"prompt_encoder.point_embeddings.{i}.weight" for i in range(4)]
    for i in (0, 1, 3, 4, 6):
        keys += [f"prompt_encoder.mask_downscaling.{i}.weight", f"prompt_encoder.mask_downscaling.{i}.bias"]
    t = "mask_decoder.transformer"
    for i in range(decoder_layers):
        for attn in ("self_attn", "cross_attn_token_to_image", "cross_attn_image_to_token"):
            for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                keys += [f"{t}.layers.{i}.{attn}.{proj}.weight", f"{t}.layers.{i}.{attn}.{proj}.bias"]
        for n in (1, 2, 3, 4):
            keys += [f"{t}.layers.{i}.norm{n}.weight", f"{t}.layers.{i}.norm{n}.bias"]
        keys += [f"{t}.layers.{i}.mlp.lin1.weight", f"{t}.layers.{i}.mlp.lin1.bias",
                 f"{t}.layers.{i}.mlp.lin2.weight", f"{t}.layers.{i}.mlp.lin2.bias"]
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        keys += [f"{t}.final_attn_token_to_image.{proj}.weight", f"{t}.final_attn_token_to_image.{proj}.bias"]
    keys += [f"{t}.norm_final_attn.weight", f"{t}.norm_final_attn.bias",
             "mask_decoder.iou_token.weight", "mask_decoder.mask_tokens.weight"]
    for i in (0, 1, 3):
        keys += [f"mask_decoder.output_upscaling.{i}.weight", f"mask_decoder.output_upscaling.{i}.bias"]
    for head in [f"output_hypernetworks_mlps.{i}" for i in range(4)] + ["iou_prediction_head"]:
        for j in range(3):
            keys += [f"mask_decoder.{head}.layers.{j}.weight", f"mask_decoder.{head}.layers.{j}.bias"]
    return keys


def hf_name(sa_key: str) -> str:
    """The (first) SamModel name the converter gives a segment-anything key."""
    return next(iter(convert_sam_state_dict({sa_key: torch.zeros(1)})))


def random_sa_state(target: SamModel) -> dict[str, torch.Tensor]:
    hf = target.state_dict()
    return {k: torch.randn(hf[hf_name(k)].shape) for k in segment_anything_keys(depth=2, decoder_layers=2)}


def test_every_segment_anything_key_maps_onto_sam_model():
    target = SamModel(sam_config("tiny", 128))
    hf = target.state_dict()
    sa_keys = segment_anything_keys(depth=2, decoder_layers=2)
    assert len(set(sa_keys)) == len(sa_keys)
    converted_names = convert_sam_state_dict({k: torch.zeros(1) for k in sa_keys})
    assert set(converted_names) == set(hf)  # covers every SamModel parameter, nothing extra
    # with real shapes and distinct values: the right tensor lands in the right place
    source = random_sa_state(target)
    target.load_state_dict(convert_sam_state_dict(source | {"pixel_mean": torch.zeros(3, 1, 1)}), strict=True)
    for k, v in source.items():
        assert torch.equal(target.state_dict()[hf_name(k)], v), k
    pe = source["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"]
    assert torch.equal(target.shared_image_embedding.positional_embedding, pe)


def test_pth_loads_weights_only_and_builds(tmp_path):
    source = random_sa_state(SamModel(sam_config("tiny", 128)))
    path = tmp_path / "sam_vit_t.pth"
    torch.save(source, path)
    model = build_sam(SamConfig(weights=str(path), size="tiny", image_size=128))
    assert torch.equal(model.mask_decoder.iou_token.weight, source["mask_decoder.iou_token.weight"])


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"image_encoder.x": torch.zeros(1), "obj": object()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        load_sam_state_dict(path)


def test_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not a segment-anything checkpoint"):
        load_sam_state_dict(path)
    with pytest.raises(FileNotFoundError):
        load_sam_state_dict(tmp_path / "missing.pth")


def test_pretrained_sam_loads_straight_into_the_target_dtype(tmp_path, monkeypatch):
    """SAM-H is 632 M parameters: a float32 copy on the host on its way to the GPU is 2.5 GB. The
    skeleton is built on the meta device and the file's tensors go straight into the target dtype."""
    source = random_sa_state(SamModel(sam_config("tiny", 128)))
    path = tmp_path / "sam_vit_t.pth"
    torch.save(source, path)
    built_on = []
    init = SamModel.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built_on.append(next(self.parameters()).device.type)

    monkeypatch.setattr(SamModel, "__init__", recording)
    model = build_sam(SamConfig(weights=str(path), size="tiny", image_size=128), dtype=torch.bfloat16)
    assert built_on == ["meta"]
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in model.parameters())
    want = source["image_encoder.blocks.1.mlp.lin1.weight"].to(torch.bfloat16)
    assert torch.equal(model.vision_encoder.layers[1].mlp.lin1.weight, want)
    # the prompt encoder shares the positional matrix again after the assignment
    assert model.prompt_encoder.shared_embedding.positional_embedding is model.shared_image_embedding.positional_embedding


def test_a_sam_file_of_another_size_is_refused_by_key(tmp_path):
    source = random_sa_state(SamModel(sam_config("tiny", 128)))
    source["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    path = tmp_path / "sam.pth"
    torch.save(source, path)
    with pytest.raises(ValueError, match=r"mask_decoder.iou_token.weight \(1, 7\)"):
        build_sam(SamConfig(weights=str(path), size="tiny", image_size=128))
