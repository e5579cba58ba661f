"""Every graph the tensorrt backend would build an engine from uses only ops TensorRT 10 parses."""

from __future__ import annotations

import onnx
import torch
from onnx import helper

from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.runtime.export import export_sam
from keyseg_core.runtime.export.exporter import export_vision
from keyseg_core.runtime.export.trt_ops import NEWER_THAN_TENSORRT_8_5, op_types, unsupported_ops


def test_exported_graphs_have_no_op_tensorrt_lacks(tiny_export, tmp_path):
    directory, _ = tiny_export
    torch.manual_seed(0)
    model, _ = build_model(registry_config("tiny"))
    export_vision(model.llava.model, tmp_path / "vision")
    graphs = sorted(directory.glob("*.onnx")) + sorted((tmp_path / "vision").glob("*.onnx"))
    assert [g.name for g in graphs] == ["decoder.onnx", "sam_encoder.onnx", "vision_tower.onnx"]
    for graph in graphs:
        assert unsupported_ops(graph) == [], graph.name
    # the attention's relative-position bias exports as Einsum, which TensorRT supports; LayerNormalization
    # (opset 17) is the one op that needs TensorRT >= 8.6 (docs/export.md)
    assert "Einsum" in op_types(directory / "sam_encoder.onnx")
    assert set(op_types(directory / "sam_encoder.onnx")) & NEWER_THAN_TENSORRT_8_5 == {"LayerNormalization"}


def test_an_unsupported_or_custom_op_is_named(tmp_path):
    nodes = [helper.make_node("Unique", ["x"], ["u"]), helper.make_node("Fancy", ["u"], ["y"], domain="acme")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4])])
    onnx.save(helper.make_model(graph), tmp_path / "bad.onnx")
    assert unsupported_ops(tmp_path / "bad.onnx") == ["Unique", "acme::Fancy"]
