"""ONNX export of KeySeg's SAM parts (image encoder, prompt-driven mask head), checked in onnxruntime."""

from .exporter import DEFAULT_OPSET, OPSETS, export_sam, sam_fingerprint
from .graphs import PARTS, parse_parts
from .manifest import MANIFEST_FILE, read_manifest

__all__ = ["DEFAULT_OPSET", "MANIFEST_FILE", "OPSETS", "PARTS", "export_sam", "parse_parts", "read_manifest",
           "sam_fingerprint"]
