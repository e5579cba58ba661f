"""Backend selection and fallback (auto), the compile backend, the vision-tower ONNX graph, a broken
export cache, and the TensorRT layer's parts that need no TensorRT: cache keys, invalidation,
binding by name."""

import json
import logging
import types

import pytest
import torch
from skimage import data

from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.modeling.sam import SamSegmenter
from keyseg_core.runtime import backends
from keyseg_core.runtime.backends import BackendUnavailable, unavailable_reason, use_backend
from keyseg_core.runtime.backends import tensorrt as trt_layer
from keyseg_core.runtime.backends.onnxruntime_sam import OrtSamSegmenter, OrtVision, cached_export, cached_vision_export
from keyseg_core.runtime.export.exporter import export_vision
from keyseg_core.runtime.predictor import Predictor

CPU = torch.device("cpu")


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model, _ = build_model(registry_config("tiny"))
    return model.eval()


def test_auto_on_a_cpu_skips_tensorrt_and_compile_and_runs_onnxruntime(onnx_cache, caplog):
    reference = Predictor.from_pretrained("config:tiny", refine="none")  # the backends' own masks
    with caplog.at_level(logging.INFO, logger="keyseg.backends"):
        auto = Predictor.from_pretrained("config:tiny", backend="auto", refine="none")
    assert auto.backend.name == "onnxruntime" and auto.backend.requested == "auto"
    skipped = dict(auto.backend.skipped)
    assert "TensorRT is not installed" in skipped["tensorrt"] and "only on CUDA" in skipped["compile"]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("trying the next backend" in w for w in warnings)  # one line each
    assert any("chose backend 'onnxruntime'" in r.message for r in caplog.records)
    assert isinstance(auto.segmenter.sam, OrtSamSegmenter) and isinstance(auto.reasoner.vision, OrtVision)
    assert isinstance(auto.model.sam, SamSegmenter)  # the backend left the model as it was
    photo, query = data.coffee(), "Which object holds the drink?"
    got, want = auto.predict(photo, query), reference.predict(photo, query)
    assert (got.mask == want.mask).mean() > 0.99 and got.keyword == want.keyword
    auto.set_image(photo)
    assert (auto.predict_queries([query])[0].mask == want.mask).mean() > 0.99


def test_auto_falls_back_to_torch_when_a_backend_fails_to_load(tiny_model, monkeypatch, caplog):
    from keyseg_core.runtime.backends import onnxruntime_sam

    def broken(model, device):
        raise RuntimeError("decoder.onnx: protobuf parsing failed")

    monkeypatch.setattr(onnxruntime_sam, "load_onnxruntime", broken)
    sam = tiny_model.sam
    with caplog.at_level(logging.WARNING, logger="keyseg.backends"):
        choice = use_backend(tiny_model, "auto", CPU)
    assert choice.name == "torch" and tiny_model.sam is sam
    assert "onnxruntime: RuntimeError: decoder.onnx: protobuf parsing failed" in choice.describe()
    assert sum("onnxruntime cannot run" in r.message for r in caplog.records) == 1
    with pytest.raises(BackendUnavailable, match="backend 'onnxruntime' cannot run: RuntimeError: decoder.onnx"):
        use_backend(tiny_model, "onnxruntime", CPU)
    assert tiny_model.sam is sam  # a failed backend leaves the model as it was


def test_out_of_gpu_memory_while_loading_a_backend_is_one_line_then_the_next(tiny_model, cuda_oom, monkeypatch,
                                                                             caplog):
    from keyseg_core.runtime.backends import onnxruntime_sam

    def on_a_full_gpu(*args, **kwargs):
        raise cuda_oom

    frees = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: frees.append(1))
    monkeypatch.setattr(onnxruntime_sam, "load_onnxruntime", on_a_full_gpu)
    cause = ("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
             "1.06 GiB is free.")
    with caplog.at_level(logging.WARNING, logger="keyseg.backends"):
        choice = use_backend(tiny_model, "auto", CPU)
    assert choice.name == "torch" and len(frees) == 1
    assert dict(choice.skipped)["onnxruntime"] == f"out of GPU memory on cpu while loading it ({cause})"
    assert sum("onnxruntime cannot run (out of GPU memory" in r.message for r in caplog.records) == 1
    monkeypatch.setattr(torch, "compile", lambda *a, **k: on_a_full_gpu)  # OOM inside the warm-up's wrapper
    with pytest.raises(BackendUnavailable, match=r"^backend 'compile' cannot run: out of GPU memory on cpu while "
                                                 r"loading it \(torch.compile failed while warming up"):
        use_backend(tiny_model, "compile", CPU)
    assert isinstance(tiny_model.sam, SamSegmenter)


def test_a_named_backend_that_cannot_run_is_an_error_with_the_reason(tiny_model, monkeypatch):
    with pytest.raises(BackendUnavailable, match="backend 'tensorrt' cannot run: TensorRT is not installed"):
        use_backend(tiny_model, "tensorrt", CPU)
    monkeypatch.setattr(torch, "compile", lambda *a, **k: (lambda *x, **y: (_ for _ in ()).throw(
        RuntimeError("inductor: no C++ compiler"))))
    with pytest.raises(BackendUnavailable, match="torch.compile failed while warming up .*no C\\+\\+ compiler"):
        use_backend(tiny_model, "compile", CPU)
    assert isinstance(tiny_model.sam, SamSegmenter)
    with pytest.raises(ValueError, match="backend 'tflite' is not one of torch, compile, onnxruntime, tensorrt, auto"):
        use_backend(tiny_model, "tflite", CPU)
    assert unavailable_reason("compile", CPU, auto=False) is None  # compile may be named on a CPU


def test_compile_backend_matches_torch(tiny_model):
    from keyseg_core.runtime.backends.compiled import CompiledSamSegmenter, load_compiled

    pixels = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    clip = torch.randn(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want_emb = tiny_model.sam.encode(pixels)
        want_mask, _ = tiny_model.sam.decode(want_emb, torch.ones(2, 64))
        want_vision = tiny_model.encode_images(clip)
    reason, vision, sam, llm = load_compiled(tiny_model, CPU, dynamo_backend="eager")  # eager: no C++ build
    assert isinstance(sam, CompiledSamSegmenter) and "torch.compile (eager" in reason
    assert llm is not None and "the LLM prefill (StaticCache" in reason  # tests/core/test_static_prefill.py
    assert isinstance(tiny_model.sam, SamSegmenter)
    with torch.inference_mode():
        emb = sam.encode(pixels)
        torch.testing.assert_close(emb, want_emb)
        torch.testing.assert_close(sam.decode(emb, torch.ones(2, 64))[0], want_mask)
        torch.testing.assert_close(vision(clip), want_vision)


def test_vision_tower_export_matches_torch(tiny_model, tmp_path):
    manifest = export_vision(tiny_model.llava.model, tmp_path / "vision")
    check = manifest["graphs"]["vision_tower"]["check"]
    print(f"vision_tower: onnxruntime vs torch max |diff| {check['max_abs_diff']:.3g} "
          f"(tolerance {check['tolerance']:.3g}, batch {check['sizes']})")
    assert check["max_abs_diff"] <= check["tolerance"]
    assert manifest["graphs"]["vision_tower"]["outputs"][0]["shape"] == [1, 16, 64]
    runner = OrtVision(tmp_path / "vision")
    clip = torch.randn(3, 3, 56, 56, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(runner(clip), tiny_model.encode_images(clip), atol=1e-4, rtol=1e-3)


def test_export_command_writes_the_vision_tower(tmp_path, capsys):
    from keyseg_core.cli.app import main

    assert main(["export", "--model", "config:tiny", "--out", str(tmp_path / "v"), "--parts", "vision_tower"]) == 0
    assert "vision_tower: onnxruntime vs torch max |diff|" in capsys.readouterr().out
    assert (tmp_path / "v" / "vision_tower.onnx").is_file()
    assert main(["export", "--model", "config:tiny", "--out", str(tmp_path / "w"),
                 "--parts", "decoder,vision_tower"]) == 2
    assert "vision_tower exports on its own" in capsys.readouterr().err


def test_a_broken_or_stale_cached_export_is_made_again(tiny_model, onnx_cache, caplog):
    from keyseg_core.runtime.backends.onnxruntime_sam import load_onnxruntime

    directory = cached_export(tiny_model.sam)
    vision_dir = cached_vision_export(tiny_model.llava.model)
    graph = directory / "decoder.onnx"
    graph.write_bytes(graph.read_bytes()[:100])  # truncated
    manifest = json.loads((vision_dir / "manifest.json").read_text())
    manifest["fingerprint"] = "0" * 64  # made from other weights
    (vision_dir / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="keyseg.backends"):
        _, _, sam = load_onnxruntime(tiny_model, CPU)
    messages = " | ".join(r.message for r in caplog.records)
    assert "does not load" in messages and "made from other weights" in messages
    assert isinstance(sam, OrtSamSegmenter)
    assert json.loads((vision_dir / "manifest.json").read_text())["fingerprint"] != "0" * 64


# ---- TensorRT, without TensorRT ----

SHAPES = {"pixels": ((1, 3, 64, 64), (1, 3, 64, 64), (4, 3, 64, 64))}


def test_engine_key_changes_with_graph_tensorrt_gpu_precision_and_shapes():
    base = trt_layer.engine_key("g" * 64, "10.13.0", "NVIDIA H200", "fp16", SHAPES)
    assert base == trt_layer.engine_key("g" * 64, "10.13.0", "NVIDIA H200", "fp16", dict(SHAPES))
    others = [
        trt_layer.engine_key("h" * 64, "10.13.0", "NVIDIA H200", "fp16", SHAPES),
        trt_layer.engine_key("g" * 64, "11.0.0", "NVIDIA H200", "fp16", SHAPES),
        trt_layer.engine_key("g" * 64, "10.13.0", "NVIDIA H100 80GB HBM3", "fp16", SHAPES),
        trt_layer.engine_key("g" * 64, "10.13.0", "NVIDIA H200", "fp32", SHAPES),
        trt_layer.engine_key("g" * 64, "10.13.0", "NVIDIA H200", "fp16",
                             {"pixels": ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))}),
    ]
    assert len({base, *others}) == 6


def test_profile_shapes_from_the_manifest(tiny_export):
    _, manifest = tiny_export
    decoder = trt_layer.profile_shapes(manifest["graphs"]["decoder"]["inputs"])
    assert decoder == {"image_embeddings": ((1, 64, 8, 8),) * 3,
                       "prompts": ((1, 64), (1, 64), (8, 64))}
    encoder = trt_layer.profile_shapes(manifest["graphs"]["sam_encoder"]["inputs"], {"batch": 2})
    assert encoder["pixels"][2] == (2, 3, 128, 128)


def test_graph_hash_follows_the_graph_file(tiny_export, tmp_path):
    import shutil

    out, _ = tiny_export
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    assert trt_layer.graph_hash(copy, "decoder") == trt_layer.graph_hash(out, "decoder")
    assert trt_layer.graph_hash(out, "decoder") != trt_layer.graph_hash(out, "sam_encoder")
    (copy / "decoder.onnx").write_bytes((copy / "decoder.onnx").read_bytes() + b"\0")
    assert trt_layer.graph_hash(copy, "decoder") != trt_layer.graph_hash(out, "decoder")


def test_engine_cache_hits_and_invalidates(tmp_path):
    cache = trt_layer.EngineCache(tmp_path)
    expected = {"graph": "g", "tensorrt": "10.13.0", "gpu": "NVIDIA H200", "precision": "fp16", "name": "decoder"}
    assert cache.lookup("k", expected) == (None, "not built yet")
    cache.store("k", b"PLAN" * 100, expected)
    hit, why = cache.lookup("k", expected)
    assert hit.plan == b"PLAN" * 100 and why == "" and hit.meta["bytes"] == 400
    # built by another TensorRT, for another GPU or precision: not used
    for field, value in (("tensorrt", "11.0.0"), ("gpu", "NVIDIA H100"), ("precision", "fp32")):
        miss, why = cache.lookup("k", expected | {field: value})
        assert miss is None and f"built for {field}" in why
    plan = tmp_path / "k" / trt_layer.ENGINE_FILE
    plan.write_bytes(plan.read_bytes()[:123])  # truncated
    miss, why = cache.lookup("k", expected)
    assert miss is None and "truncated or corrupt" in why
    (tmp_path / "k" / trt_layer.META_FILE).write_text("{not json")
    assert "unreadable" in cache.lookup("k", expected)[1]
    cache.invalidate("k")
    assert not (tmp_path / "k").exists()


def test_get_or_build_rebuilds_what_does_not_load(tmp_path):
    cache = trt_layer.EngineCache(tmp_path)
    expected = {"graph": "g", "tensorrt": "10.13.0", "gpu": "gpu", "precision": "fp32", "name": "x"}
    builds, unloadable = [], set()

    def build():
        builds.append(1)
        return f"plan-{len(builds)}".encode()

    def load(plan):
        if plan in unloadable:
            raise trt_layer.EngineError("deserialisation failed")
        return plan.decode()

    assert trt_layer.get_or_build(cache, "k", expected, build, load)[::2] == ("plan-1", True)
    assert trt_layer.get_or_build(cache, "k", expected, build, load)[::2] == ("plan-1", False)
    unloadable.add(b"plan-1")  # the cached plan no longer loads (as one for another TensorRT would not)
    assert trt_layer.get_or_build(cache, "k", expected, build, load)[::2] == ("plan-2", True)
    assert trt_layer.get_or_build(cache, "k", expected, build, load)[::2] == ("plan-2", False)
    assert len(builds) == 2


def _fake_trt(names: dict[str, bool], deserialises: bool = True):
    """The few TensorRT runtime calls TrtGraph makes, as a stand-in module."""
    mode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    dtype = types.SimpleNamespace(FLOAT="f32", HALF="f16", INT32="i32", BOOL="b")

    class Engine:
        num_io_tensors = len(names)

        def get_tensor_name(self, i):
            return list(names)[i]

        def get_tensor_mode(self, name):
            return mode.INPUT if names[name] else mode.OUTPUT

        def get_tensor_dtype(self, name):
            return dtype.HALF

        def create_execution_context(self):
            return object()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return Engine() if deserialises else None

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    return types.SimpleNamespace(Logger=Logger, Runtime=Runtime, TensorIOMode=mode, DataType=dtype)


def test_binding_by_name():
    io = {"prompts": True, "image_embeddings": True, "iou_predictions": False, "low_res_masks": False}
    graph = trt_layer.TrtGraph(_fake_trt(io), b"plan", ["image_embeddings", "prompts"],
                               ["low_res_masks", "iou_predictions"], "decoder")
    assert {(b.name, b.is_input, b.dtype) for b in graph.bindings} == {
        ("prompts", True, torch.float16), ("image_embeddings", True, torch.float16),
        ("iou_predictions", False, torch.float16), ("low_res_masks", False, torch.float16)}
    wrong = {"pixels": True, "image_embeddings": False}  # an encoder engine where a decoder belongs
    with pytest.raises(trt_layer.EngineError, match="engine and model do not match"):
        trt_layer.TrtGraph(_fake_trt(wrong), b"plan", ["image_embeddings", "prompts"],
                           ["low_res_masks", "iou_predictions"], "decoder")
    with pytest.raises(trt_layer.EngineError, match="could not deserialise"):
        trt_layer.TrtGraph(_fake_trt(io, deserialises=False), b"plan", [], [], "decoder")


def test_auto_order():
    assert backends.AUTO_ORDER == ("tensorrt", "compile", "onnxruntime", "torch")
    assert set(backends.AUTO_ORDER) | {"auto"} == set(backends.BACKENDS)
