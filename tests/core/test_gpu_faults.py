"""Bad GPU facts, simulated on the CPU: a GPU without bfloat16, a model too big for the GPU, and out
of GPU memory on frames (one line per failed frame, memory freed, the next frame served; under
'auto', repeated failures step down to the next backend)."""

import logging

import numpy as np
import pytest
import torch
from torch import nn

from keyseg_core.inference.gpu_memory import OutOfGpuMemory
from keyseg_core.inference.stream import StreamingSegmenter
from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.runtime import predictor as predictor_module
from keyseg_core.runtime.backends import onnxruntime_sam, use_backend
from keyseg_core.runtime.predictor import OOM_STEP_DOWN, Predictor
from keyseg_core.weights.precision import resolve_dtype

CUDA = torch.device("cuda")
CAUSE = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
         "1.06 GiB is free.")  # conftest's cuda_oom, cut to one short line
IMAGE = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.fixture
def gpu(monkeypatch):
    """CUDA 'available', a Tesla T4 (no native bfloat16); tests flip `bf16` to make it newer."""
    state = {"bf16": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: state["bf16"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(predictor_module, "enable_tf32", lambda: None)  # keeps this process's CPU matmuls exact
    return state


@pytest.fixture
def frees(monkeypatch):
    """How often the CUDA allocator's cache was handed back."""
    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    return calls


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return build_model(registry_config("tiny"))


def test_auto_dtype_on_a_gpu_without_bf16_is_float16_with_the_cause(gpu, caplog):
    with caplog.at_level(logging.WARNING, logger="keyseg.precision"):
        assert resolve_dtype("auto", CUDA) == torch.float16
    assert [r.message for r in caplog.records] == [
        "dtype auto: float16, because cuda (Tesla T4) has no native bfloat16 (it needs compute capability 8.0 "
        "or newer)"]
    assert resolve_dtype("float16", CUDA) == torch.float16
    gpu["bf16"] = True
    assert resolve_dtype("auto", CUDA) == torch.bfloat16 and resolve_dtype("bfloat16", CUDA) == torch.bfloat16


def test_bf16_on_a_gpu_without_it_is_refused_before_loading(gpu, monkeypatch):
    loads = []
    monkeypatch.setattr(predictor_module, "load_model", lambda *args: loads.append(args))
    with pytest.raises(ValueError, match=r"^dtype 'bfloat16' cannot run here: cuda \(Tesla T4\) has no native "
                                         r"bfloat16 .*; use dtype 'float16' or 'auto'$"):
        Predictor.from_pretrained("config:tiny", device="cuda", dtype="bfloat16")
    assert not loads


def test_a_model_too_big_for_the_gpu_is_one_line_or_the_cpu_when_allowed(gpu, frees, cuda_oom, monkeypatch,
                                                                           caplog):
    gpu["bf16"] = True
    load = predictor_module.load_model

    def on_a_full_gpu(name, dtype, device, check_bases=True):
        if device.type == "cuda":
            raise cuda_oom
        return load(name, dtype, device, check_bases)

    monkeypatch.setattr(predictor_module, "load_model", on_a_full_gpu)
    cause = f"out of GPU memory on cuda while loading model 'config:tiny' in bfloat16 ({CAUSE})"
    with pytest.raises(OutOfGpuMemory) as refused:
        Predictor.from_pretrained("config:tiny", device="cuda")
    assert str(refused.value) == f"{cause}; free GPU memory, choose a smaller model or dtype, or allow cpu_fallback"
    assert frees
    with caplog.at_level(logging.WARNING, logger="keyseg.predictor"):
        predictor = Predictor.from_pretrained("config:tiny", device="cuda", cpu_fallback=True)
    assert (predictor.device.type, predictor.dtype) == ("cpu", torch.float32)
    assert [r.message for r in caplog.records] == [f"{cause}; loading it on the CPU in float32 instead (cpu_fallback)"]
    assert predictor.predict(IMAGE, "the cup").mask.shape == IMAGE.shape[:2]


def test_out_of_memory_on_a_frame_fails_that_frame_and_the_next_is_served(tiny, frees, cuda_oom, monkeypatch):
    model, processor = tiny
    predictor = Predictor(model, processor, model_name="config:tiny", untrained=True)
    reasoning = predictor.reason(IMAGE, "the cup")
    encode, failing = model.sam.encode, [True] * OOM_STEP_DOWN

    def encode_on_a_full_gpu(pixels):
        if failing and failing.pop():
            raise cuda_oom
        return encode(pixels)

    monkeypatch.setattr(model.sam, "encode", encode_on_a_full_gpu)
    for _ in range(OOM_STEP_DOWN):  # a named backend: reported every time, never stepped down from
        with pytest.raises(OutOfGpuMemory) as failed:
            predictor.segment(IMAGE, reasoning)
        assert str(failed.value) == f"out of GPU memory on cpu while segmenting a frame (backend 'torch'): {CAUSE}"
    assert len(frees) == OOM_STEP_DOWN and predictor.backend.name == "torch"
    prediction, _ = predictor.segment(IMAGE, reasoning)
    assert prediction.mask.shape == IMAGE.shape[:2]


class FullGpuSam(nn.Module):
    """A backend's SAM that is always out of GPU memory."""

    accepts_mask_prompt = False

    def __init__(self, image_size: int, error: Exception) -> None:
        super().__init__()
        self.image_size, self.error = image_size, error

    def encode(self, pixels):
        raise self.error


def test_auto_steps_down_after_repeated_out_of_memory_mid_stream(tiny, frees, cuda_oom, monkeypatch, caplog):
    model, processor = tiny
    torch_sam = model.sam

    def load_full(model, device):  # stands in for onnxruntime, which auto picks on a CPU
        return "a backend on a full GPU", None, FullGpuSam(torch_sam.image_size, cuda_oom)

    monkeypatch.setattr(onnxruntime_sam, "load_onnxruntime", load_full)
    choice = use_backend(model, "auto", torch.device("cpu"))
    assert choice.name == "onnxruntime" and isinstance(choice.sam, FullGpuSam) and model.sam is torch_sam
    predictor = Predictor(model, processor, model_name="config:tiny", untrained=True, backend=choice)
    stream = StreamingSegmenter(predictor)
    stream.set_query("the cup")
    lines = []
    caplog.clear()  # the load's lines (backends skipped) are tested elsewhere
    with caplog.at_level(logging.WARNING, logger="keyseg.backends"):
        for i in range(OOM_STEP_DOWN):
            with pytest.raises(OutOfGpuMemory) as failed:
                stream.step(IMAGE, now=float(i))
            lines.append(str(failed.value))
    first = f"out of GPU memory on cpu while segmenting a frame (backend 'onnxruntime'): {CAUSE}"
    assert lines == [first] * (OOM_STEP_DOWN - 1) + [f"{first}; backend auto stepped down from 'onnxruntime' to 'torch'"]
    assert [r.message for r in caplog.records] == [
        f"backend auto: onnxruntime ran out of GPU memory on {OOM_STEP_DOWN} calls of segment in a row; "
        "stepping down to the next backend"]
    assert predictor.backend.name == "torch" and predictor.segmenter.sam is torch_sam and model.sam is torch_sam
    assert "onnxruntime: ran out of GPU memory" in predictor.backend.describe()
    result = stream.step(IMAGE, now=float(OOM_STEP_DOWN))  # the next frame, on the torch backend
    assert result.prediction.mask.shape == IMAGE.shape[:2] and stream.reasonings == 1
