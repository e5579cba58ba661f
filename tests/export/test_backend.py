"""The onnxruntime SAM backend: same interface and results as torch SAM; backend validation."""

import pytest
import torch
from skimage import data

from keyseg_core.runtime.backends import use_backend
from keyseg_core.runtime.backends.onnxruntime_sam import OrtSamSegmenter
from keyseg_core.runtime.ort import resolve_providers
from keyseg_core.runtime.predictor import Predictor


def test_ort_segmenter_matches_torch_segmenter(tiny_export, tiny_sam):
    out, _ = tiny_export
    ort_sam = OrtSamSegmenter(out)
    assert (ort_sam.image_size, ort_sam.prompt_dim) == (tiny_sam.image_size, tiny_sam.prompt_dim)
    assert ort_sam.providers == ["CPUExecutionProvider"]
    assert list(ort_sam.parameters()) == []
    gen = torch.Generator().manual_seed(0)
    pixels, prompts = torch.randn(2, 3, 128, 128, generator=gen), torch.randn(3, 64, generator=gen)
    with torch.no_grad():
        emb = tiny_sam.encode(pixels)
        got_emb = ort_sam.encode(pixels)
        assert got_emb.dtype == torch.float32 and torch.allclose(got_emb, emb, atol=1e-4)
        for got, want in zip(ort_sam.decode(emb[1:], prompts), tiny_sam.decode(emb[1:], prompts)):
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


def test_ort_segmenter_needs_both_parts(tiny_sam, tmp_path):
    from keyseg_core.runtime.export import export_sam

    export_sam(tiny_sam, tmp_path / "enc", parts=("sam_encoder",))
    with pytest.raises(ValueError, match="lacks decoder"):
        OrtSamSegmenter(tmp_path / "enc")


def test_predictor_onnxruntime_gives_the_torch_mask(onnx_cache, monkeypatch):
    torch.manual_seed(0)
    # the backends' own masks (refine none): parity of the graphs, not of a refinement that may amplify it
    reference = Predictor.from_pretrained("config:tiny", refine="none")
    ort = Predictor.from_pretrained("config:tiny", backend="onnxruntime", refine="none")
    assert isinstance(ort.segmenter.sam, OrtSamSegmenter)
    # SAM and the vision tower exported into the cache on first use
    assert sorted(p.name.startswith("vision-") for p in onnx_cache.iterdir()) == [False, True]
    photo, query = data.coffee(), "Which object holds the drink?"
    want, got = reference.predict(photo, query), ort.predict(photo, query)
    assert got.mask.shape == photo.shape[:2]
    assert (got.mask == want.mask).mean() > 0.99
    assert got.score == pytest.approx(want.score, abs=1e-3) and got.keyword == want.keyword
    # a second load reuses the cached export instead of exporting again
    from keyseg_core.runtime.backends import onnxruntime_sam

    monkeypatch.setattr(onnxruntime_sam, "export_sam", lambda *a, **k: pytest.fail("exported twice"))
    monkeypatch.setattr(onnxruntime_sam, "export_vision", lambda *a, **k: pytest.fail("exported twice"))
    Predictor.from_pretrained("config:tiny", backend="onnxruntime")


def test_tensorrt_backend_without_tensorrt_says_why_and_what_to_do():
    with pytest.raises(RuntimeError, match="backend 'tensorrt' cannot run: TensorRT is not installed") as info:
        Predictor.from_pretrained("config:tiny", backend="tensorrt")
    assert "pypi.nvidia.com" in str(info.value) and "'auto'" in str(info.value) and "keyseg export" in str(info.value)


def test_unknown_backend_refused():
    with pytest.raises(ValueError, match="backend 'tflite' is not one of torch, compile, onnxruntime"):
        Predictor.from_pretrained("config:tiny", backend="tflite")
    with pytest.raises(ValueError, match="not one of"):
        use_backend(object(), "openvino", torch.device("cpu"))  # refused before the model is touched


def test_missing_execution_provider_is_named():
    with pytest.raises(ValueError, match="NoSuchExecutionProvider not installed here; available: .*CPU"):
        resolve_providers(["NoSuchExecutionProvider"])
    assert resolve_providers(None)[-1] == "CPUExecutionProvider"
