"""ONNX export of KeySeg's per-frame graphs (SAM image encoder, prompt-driven mask head, vision tower),
checked in onnxruntime."""

from keyseg_core.runtime.export.exporter import DEFAULT_OPSET, OPSETS, export_sam, export_vision, sam_fingerprint, vision_fingerprint
from keyseg_core.runtime.export.graphs import PARTS, VISION_PART, parse_parts
from keyseg_core.runtime.export.manifest import MANIFEST_FILE, read_manifest

__all__ = ["DEFAULT_OPSET", "MANIFEST_FILE", "OPSETS", "PARTS", "VISION_PART", "export_sam", "export_vision",
           "parse_parts", "read_manifest", "sam_fingerprint", "vision_fingerprint"]
