"""Convolutional stems in place of the patch embeddings of towers trained from scratch."""

import pytest
import torch

from keyseg_core.config.model import BackboneConfig, KeySegConfig, SamConfig
from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.modeling.stems import ConvStem, conv_stem_like
from keyseg_core.runtime.export import export_sam
from keyseg_core.weights.checkpoint import load_checkpoint, save_checkpoint


def _tiny_with_stems() -> KeySegConfig:
    config = registry_config("tiny").to_dict()
    config["backbone"]["vision_stem"] = "conv"
    config["backbone"]["vision_config"]["patch_size"] = 8  # the tiny tower's 14-px patches have no stem
    config["sam"]["stem"] = "conv"
    config["trainable"] = {"vision_tower": True, "sam_image_encoder": True}  # trained from scratch, so saved
    return KeySegConfig.from_dict(config)


@pytest.fixture(scope="module")
def stem_model():
    return build_model(_tiny_with_stems())


@pytest.mark.parametrize("stride", [2, 8, 16])
def test_stem_gives_the_patch_conv_grid(stride):
    patch = torch.nn.Conv2d(3, 64, stride, stride=stride)
    stem = conv_stem_like(patch, seed=0)
    x = torch.randn(2, 3, 64, 64)
    assert stem(x).shape == patch(x).shape
    assert stem.weight is stem.layers[0].weight


def test_stem_refuses_what_is_not_a_patch_conv():
    with pytest.raises(ValueError, match="power of two"):
        ConvStem(3, 64, 6)
    with pytest.raises(ValueError, match="square patch conv"):
        conv_stem_like(torch.nn.Conv2d(3, 8, 3, stride=1), seed=0)


def test_stems_replace_both_patch_embeddings_and_train(stem_model):
    model, _ = stem_model
    sam_patch = model.sam.sam.vision_encoder.patch_embed.projection
    tower_patch = model.llava.model.vision_tower.embeddings.patch_embedding
    assert isinstance(sam_patch, ConvStem) and isinstance(tower_patch, ConvStem)
    assert all(p.requires_grad for p in [*sam_patch.parameters(), *tower_patch.parameters()])
    grid = model.config.sam.image_size // 16
    assert model.sam.encode(torch.zeros(1, 3, model.config.sam.image_size, model.config.sam.image_size)).shape[-1] == grid


def test_stems_build_the_same_weights_every_time_and_round_trip(stem_model, tmp_path):
    model, _ = stem_model
    again, _ = build_model(_tiny_with_stems())
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # a trained stem differs from the drawn one, and must come back from the checkpoint
        model.sam.sam.vision_encoder.patch_embed.projection.layers[0].weight.add_(0.5)
    save_checkpoint(model, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    torch.testing.assert_close(loaded.sam.sam.vision_encoder.patch_embed.projection.layers[0].weight,
                               model.sam.sam.vision_encoder.patch_embed.projection.layers[0].weight)


def test_stem_only_for_random_towers():
    with pytest.raises(ValueError, match="stem: 'conv' replaces the patch embedding of a 'random' SAM"):
        SamConfig(weights="sam_vit_b_01ec64.pth", stem="conv")
    with pytest.raises(ValueError, match="vision_stem: 'conv'.*'random' tower"):
        BackboneConfig(vision="openai/clip-vit-large-patch14", vision_stem="conv")
    with pytest.raises(ValueError, match="stem: 'pixel' is not"):
        SamConfig(stem="pixel")


def test_a_patch_size_without_a_stem_is_named():
    config = _tiny_with_stems().to_dict()
    config["backbone"]["vision_config"]["patch_size"] = 14
    with pytest.raises(ValueError, match=r"vision_stem: .*patch size 14 .*vision_config.patch_size"):
        build_model(KeySegConfig.from_dict(config))


def test_sam_with_a_conv_stem_exports_to_onnx(stem_model, tmp_path):
    model, _ = stem_model
    manifest = export_sam(model.sam.eval(), tmp_path / "onnx", info={"model": "stems", "config_name": "tiny",
                                                                     "sam_size": "tiny"})
    check = manifest["graphs"]["sam_encoder"]["check"]
    assert check["max_abs_diff"] <= check["tolerance"]
