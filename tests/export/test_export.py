"""ONNX export of the tiny SAM: manifest, graphs vs torch at new dynamic sizes, argument errors."""

import json

import numpy as np
import onnx
import pytest
import torch

from keyseg_core.cli.app import main
from keyseg_core.runtime.export import MANIFEST_FILE, export_sam, parse_parts, read_manifest
from keyseg_core.runtime.export.exporter import check_graph
from keyseg_core.runtime.export.graphs import graph_specs
from keyseg_core.runtime.export.loading import load_segmenter
from keyseg_core.runtime.ort import CPU, create_session


def test_manifest_describes_graphs(tiny_export, tiny_sam):
    out, manifest = tiny_export
    assert read_manifest(out) == manifest
    assert manifest["opset"] == 17 and manifest["dtype"] == "float32"
    assert manifest["image_size"] == 128 and manifest["prompt_dim"] == 64 and manifest["config_name"] == "tiny"
    enc, dec = manifest["graphs"]["sam_encoder"], manifest["graphs"]["decoder"]
    assert enc["inputs"] == [{"name": "pixels", "shape": ["batch", 3, 128, 128], "dtype": "float32"}]
    assert [o["shape"] for o in dec["outputs"]] == [["num_prompts", 32, 32], ["num_prompts"]]
    for graph in manifest["graphs"].values():
        assert graph["check"]["max_abs_diff"] <= graph["check"]["tolerance"] and graph["data_file"] is None
        model = onnx.load(str(out / graph["file"]))
        assert model.opset_import[0].version == 17
        for tensor, spec in zip(model.graph.input, graph["inputs"]):
            dims = [d.dim_param or d.dim_value for d in tensor.type.tensor_type.shape.dim]
            assert tensor.name == spec["name"] and dims == spec["shape"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def _session(out, name):
    return create_session(out / f"{name}.onnx", [CPU])


@pytest.mark.parametrize("batch", [1, 3])
def test_encoder_dynamic_batch_matches_torch(tiny_export, tiny_sam, batch):
    out, _ = tiny_export
    pixels = torch.randn(batch, 3, 128, 128, generator=torch.Generator().manual_seed(batch))
    (got,) = _session(out, "sam_encoder").run(None, {"pixels": pixels.numpy()})
    with torch.no_grad():
        want = tiny_sam.encode(pixels).numpy()
    assert got.shape == want.shape == (batch, 64, 8, 8)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_decoder_dynamic_prompts_match_torch(tiny_export, tiny_sam, n):
    out, _ = tiny_export
    gen = torch.Generator().manual_seed(n)
    with torch.no_grad():
        embedding = tiny_sam.encode(torch.randn(1, 3, 128, 128, generator=gen))  # a real embedding
        prompts = torch.randn(n, 64, generator=gen)
        want = [t.numpy() for t in tiny_sam.decode(embedding, prompts)]
    got = _session(out, "decoder").run(None, {"image_embeddings": embedding.numpy(), "prompts": prompts.numpy()})
    assert [g.shape for g in got] == [w.shape for w in want] == [(n, 32, 32), (n,)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-6 + 1e-3 * np.abs(w).max(), rtol=0)


def test_check_catches_a_graph_that_differs(tiny_export, tiny_sam):
    out, _ = tiny_export
    import copy

    other = copy.deepcopy(tiny_sam)
    with torch.no_grad():
        other.sam.mask_decoder.iou_prediction_head.proj_out.bias.add_(1.0)
    with pytest.raises(RuntimeError, match="differs from torch"):
        check_graph(out / "decoder.onnx", graph_specs(other)["decoder"], "float32")


def test_fp16_export_runs_in_onnxruntime(tiny_sam, tmp_path):
    manifest = export_sam(tiny_sam, tmp_path / "fp16", parts=("decoder",), fp16=True, opset=14)
    assert list(manifest["graphs"]) == ["decoder"] and manifest["dtype"] == "float16" and manifest["opset"] == 14
    session = _session(tmp_path / "fp16", "decoder")
    assert session.get_inputs()[1].type == "tensor(float16)"


def test_overwrite_refused_then_allowed(tiny_sam, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", "--model", "config:tiny", "--out", str(out), "--parts", "decoder"]) == 0
    assert "decoder" in capsys.readouterr().out
    first = (out / MANIFEST_FILE).read_text()
    assert main(["export", "--model", "config:tiny", "--out", str(out)]) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert (out / MANIFEST_FILE).read_text() == first
    with pytest.raises(FileExistsError, match="overwrite"):
        export_sam(tiny_sam, out)
    assert main(["export", "--model", "config:tiny", "--out", str(out), "--overwrite"]) == 0
    assert set(json.loads((out / MANIFEST_FILE).read_text())["graphs"]) == {"sam_encoder", "decoder"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--parts", "sam_encoder,llm"], "unknown part(s) llm; choose from sam_encoder, decoder"),
        (["--parts", ","], "--parts ',': empty"),
        (["--opset", "9"], "opset 9 is not supported"),
    ],
)
def test_bad_arguments(tmp_path, capsys, argv, message):
    assert main(["export", "--model", "config:tiny", "--out", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_parse_parts_dedupes():
    assert parse_parts("decoder, sam_encoder,decoder") == ("decoder", "sam_encoder")


def test_config_export_builds_the_same_sam_as_the_model(tiny_sam):
    sam, info = load_segmenter("config:tiny")
    assert info == {"model": "config:tiny", "config_name": "tiny", "sam_size": "tiny"}
    want = tiny_sam.state_dict()
    assert all(torch.equal(t, want[k]) for k, t in sam.state_dict().items())


def test_read_manifest_errors(tiny_export, tmp_path):
    with pytest.raises(FileNotFoundError, match="not a keyseg ONNX export"):
        read_manifest(tmp_path)
    out, manifest = tiny_export
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(ValueError, match="re-export"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(FileNotFoundError, match="sam_encoder.onnx is missing"):
        read_manifest(tmp_path)


def test_graph_over_protobuf_limit_gets_one_weights_file(tiny_sam, tmp_path, monkeypatch):
    """A >2 GiB graph (SAM ViT-H) is traced as one file per weight; the export gathers them into one."""
    real_export = torch.onnx.export

    def scattered_export(module, args, f, **kw):  # what the exporter writes past protobuf's limit
        real_export(module, args, f, **kw)
        onnx.save_model(onnx.load(f), f, save_as_external_data=True, all_tensors_to_one_file=False,
                        size_threshold=0)

    monkeypatch.setattr(torch.onnx, "export", scattered_export)
    out = tmp_path / "big"
    manifest = export_sam(tiny_sam, out, parts=("decoder",))
    assert manifest["graphs"]["decoder"]["data_file"] == "decoder.onnx.data"
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "decoder.onnx.data", MANIFEST_FILE]
    (out / "decoder.onnx.data").unlink()
    with pytest.raises(FileNotFoundError, match="decoder.onnx.data is missing"):
        read_manifest(out)


def test_trtexec_commands_name_the_checked_shapes(tiny_export):
    out, manifest = tiny_export
    from keyseg_core.runtime.export.trtexec import trtexec_commands

    mkdir, decoder, encoder = trtexec_commands(out, max_sizes={"num_prompts": 5})
    assert mkdir == f"mkdir -p $HOME/.cache/keyseg/trt/{manifest['fingerprint'][:16]}"
    assert f"--onnx={out / 'sam_encoder.onnx'}" in encoder and " --fp16 " in encoder
    assert "--minShapes=pixels:1x3x128x128 --optShapes=pixels:1x3x128x128 --maxShapes=pixels:4x3x128x128" in encoder
    assert "--maxShapes=image_embeddings:1x64x8x8,prompts:5x64" in decoder
