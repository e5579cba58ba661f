"""Which ONNX ops of an exported graph TensorRT cannot parse.

TensorRT cannot be installed where keyseg is built, so this is the check that stands in for its ONNX
parser: every node must be in the default ONNX domain (no custom ops) and not among the operators
that onnx-tensorrt's support matrix (docs/operators.md, TensorRT 10.15, opsets 9-24) marks
unsupported. Restrictions on supported ops are in docs/export.md.
"""

from __future__ import annotations

from pathlib import Path

# onnx-tensorrt's operator matrix for TensorRT 10.15: the operators marked "N"
TENSORRT_UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor", "Col2Im",
    "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger", "DFT", "Det", "DynamicQuantizeLinear",
    "ImageDecoder", "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement", "QLinearConv",
    "QLinearMatMul", "RegexFullMatch", "SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase",
    "SequenceInsert", "SequenceLength", "SequenceMap", "SoftmaxCrossEntropyLoss", "SplitToSequence",
    "StringNormalizer", "TfIdfVectorizer", "Unique",
})
# ops TensorRT before 8.6 (JetPack 5's 8.5) lacks that the exported graphs use
NEWER_THAN_TENSORRT_8_5 = frozenset({"LayerNormalization"})


def op_types(path: str | Path) -> dict[str, int]:
    """Op type (with its domain when not ONNX's own) -> count of nodes, for one graph file."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        name = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def unsupported_ops(path: str | Path) -> list[str]:
    """Ops of the graph TensorRT 10 cannot parse (custom-domain ops included); [] when it can."""
    return sorted(op for op in op_types(path) if "::" in op or op in TENSORRT_UNSUPPORTED)
