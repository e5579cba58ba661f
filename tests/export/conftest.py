import pytest
import torch

from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.runtime.export import export_sam


@pytest.fixture(scope="package")
def tiny_sam():
    """The tiny config's SAM segmenter, exactly as build_model makes it."""
    torch.manual_seed(0)
    model, _ = build_model(registry_config("tiny"))
    return model.sam.eval()


@pytest.fixture(scope="package")
def tiny_export(tiny_sam, tmp_path_factory):
    """(directory, manifest) of the tiny SAM exported once for the whole package."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    return out, export_sam(tiny_sam, out, info={"model": "config:tiny", "config_name": "tiny", "sam_size": "tiny"})


@pytest.fixture
def onnx_cache(tmp_path, monkeypatch):
    """Point the on-demand export cache at a temporary directory (KEYSEG_CACHE also holds the offline LLM)."""
    from keyseg_core.runtime.backends import onnxruntime_sam

    monkeypatch.setattr(onnxruntime_sam, "export_cache_dir", lambda: tmp_path / "onnx")
    return tmp_path / "onnx"
