"""The convolutional SAM image encoder (sam.encoder: cnn): the ViT's grid, seeded, saved, exported."""

import numpy as np
import pytest
import torch

from keyseg_core.config.model import KeySegConfig, SamConfig
from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.modeling.cnn_encoder import CnnImageEncoder
from keyseg_core.runtime.export import export_sam
from keyseg_core.runtime.ort import CPU, create_session
from keyseg_core.weights.checkpoint import load_checkpoint, save_checkpoint


def _tiny_cnn() -> KeySegConfig:
    config = registry_config("tiny").to_dict()
    config["sam"]["encoder"] = "cnn"
    config["sam"]["cnn_width"] = 32
    config["trainable"] = {"sam_image_encoder": True}  # trained from scratch, so saved
    return KeySegConfig.from_dict(config)


@pytest.fixture(scope="module")
def cnn_model():
    return build_model(_tiny_cnn())[0]


def test_cnn_replaces_the_vit_with_the_same_grid_and_trains(cnn_model):
    encoder = cnn_model.sam.sam.vision_encoder
    assert isinstance(encoder, CnnImageEncoder)
    assert all(p.requires_grad for p in encoder.parameters())
    vit = build_model(registry_config("tiny"))[0].sam
    pixels = torch.randn(2, 3, 128, 128)
    assert cnn_model.sam.encode(pixels).shape == vit.encode(pixels).shape == (2, 64, 8, 8)


def test_cnn_is_drawn_from_the_seed_and_round_trips(cnn_model, tmp_path):
    again = build_model(_tiny_cnn())[0]
    for (name, a), b in zip(cnn_model.sam.state_dict().items(), again.sam.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():  # a trained encoder differs from the drawn one and must come back from the checkpoint
        again.sam.sam.vision_encoder.neck[0].weight.add_(0.25)
    save_checkpoint(again, tmp_path / "ckpt")
    loaded, _ = load_checkpoint(tmp_path / "ckpt")
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded.sam.encode(pixels), again.sam.encode(pixels))
        assert not torch.allclose(loaded.sam.encode(pixels), cnn_model.sam.encode(pixels))


def test_cnn_exports_to_onnx_with_parity(cnn_model, tmp_path):
    manifest = export_sam(cnn_model.sam.eval(), tmp_path / "onnx",
                          info={"model": "cnn", "config_name": "tiny", "sam_size": "tiny"})
    check = manifest["graphs"]["sam_encoder"]["check"]
    assert check["max_abs_diff"] <= check["tolerance"]
    pixels = torch.randn(3, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    (got,) = create_session(tmp_path / "onnx" / "sam_encoder.onnx", [CPU]).run(None, {"pixels": pixels.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, cnn_model.sam.encode(pixels).numpy(), atol=1e-4, rtol=0)


def test_cnn_settings_are_checked_by_name():
    with pytest.raises(ValueError, match="encoder: 'cnn' is for a 'random' SAM"):
        SamConfig(weights="sam_vit_b_01ec64.pth", encoder="cnn")
    with pytest.raises(ValueError, match="encoder: 'resnet' is not"):
        SamConfig(encoder="resnet")
    with pytest.raises(ValueError, match="stem: 'conv' is a ViT's patch embedding"):
        SamConfig(encoder="cnn", stem="conv")
    with pytest.raises(ValueError, match="cnn_width: 8"):
        SamConfig(encoder="cnn", cnn_width=8)
    config = _tiny_cnn().to_dict()
    config["sam"]["vision_config"] = {"patch_size": 2}
    with pytest.raises(ValueError, match="encoder: cnn encoder: stride 2"):
        build_model(KeySegConfig.from_dict(config))
