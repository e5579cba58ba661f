"""Export SAM's image encoder and mask head to ONNX through the real modules, checked in onnxruntime.

`export_sam` traces each part with the TorchScript exporter (`dynamo=False`: it needs no extra
package and handles transformers' SAM), names its inputs and dynamic axes, runs every graph in
onnxruntime (CPU) at dynamic sizes other than the traced one, and compares with the float32 torch
module. The export directory appears only after every check has passed: files are written to a
temporary sibling directory that is then renamed into place.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from keyseg_core.modeling.sam import SamSegmenter
from keyseg_core.runtime.export.graphs import PARTS, VISION_PART, GraphSpec, TensorSpec, embedding_shape, graph_specs, vision_graph_spec
from keyseg_core.runtime.export.manifest import FORMAT, FORMAT_VERSION, write_manifest
from keyseg_core.runtime.ort import CPU, create_session

OPSETS = range(14, 21)  # the TorchScript exporter's range; 17 adds LayerNormalization
DEFAULT_OPSET = 17
# |ort - torch| <= ATOL + RTOL * max|torch|, per graph dtype (fp16 is compared with the fp32 model)
TOLERANCE = {"float32": (1e-5, 1e-3), "float16": (1e-3, 3e-2)}


def sam_fingerprint(sam: SamSegmenter, *, opset: int, fp16: bool, parts: tuple[str, ...]) -> str:
    """sha256 of the SAM weights (bytes, as float32) and export settings: the cache key of an export."""
    h = hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:{opset}:{fp16}:{','.join(parts)}:{sam.image_size};".encode())
    for name, tensor in sam.state_dict().items():
        h.update(f"{name}:{tuple(tensor.shape)};".encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def export_sam(
    sam: SamSegmenter,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    parts: tuple[str, ...] = PARTS,
    fp16: bool = False,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export `parts` of `sam` to `out`/<part>.onnx plus manifest.json; returns the manifest.

    `info` (model name, config name, ...) is recorded in the manifest. Raises FileExistsError if `out`
    exists and not `overwrite`, RuntimeError if a graph differs from torch beyond tolerance.
    """
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts {parts}: choose one or more of {', '.join(PARTS)}")
    reference = copy.deepcopy(sam).to("cpu", torch.float32).eval()
    traced = copy.deepcopy(reference).half() if fp16 else reference
    manifest = {
        "image_size": sam.image_size, "prompt_dim": sam.prompt_dim, "embedding_shape": list(embedding_shape(sam)),
        "fingerprint": sam_fingerprint(sam, opset=opset, fp16=fp16, parts=parts), **(info or {}),
    }
    return _export(graph_specs(traced), graph_specs(reference), parts, out, opset=opset, fp16=fp16,
                   overwrite=overwrite, manifest=manifest)


def vision_fingerprint(llava_model: torch.nn.Module, *, opset: int, fp16: bool) -> str:
    """sha256 of the vision tower + projector weights and export settings (the vision export's cache key)."""
    h = hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:{VISION_PART}:{opset}:{fp16};".encode())
    for prefix, module in (("vision_tower", llava_model.vision_tower),
                           ("projector", llava_model.multi_modal_projector)):
        for name, tensor in module.state_dict().items():
            h.update(f"{prefix}.{name}:{tuple(tensor.shape)};".encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    h.update(f"{llava_model.config.vision_feature_layer}:{llava_model.config.vision_feature_select_strategy}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def _without_language_model(llava_model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The LlavaModel with its language model swapped out for the duration (so a copy of it is small)."""
    language_model = llava_model.language_model
    llava_model.language_model = torch.nn.Identity()
    try:
        yield llava_model
    finally:
        llava_model.language_model = language_model


def export_vision(
    llava_model: torch.nn.Module,
    out: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    overwrite: bool = False,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export a LlavaModel's vision tower + projector to `out`/vision_tower.onnx plus manifest.json."""
    with _without_language_model(llava_model) as vision_only:
        reference = copy.deepcopy(vision_only).to("cpu", torch.float32).eval()
    traced = copy.deepcopy(reference).half() if fp16 else reference
    spec = vision_graph_spec(reference)
    manifest = {
        "image_size": spec.inputs[0].shape[-1], "image_tokens": spec.outputs[0].shape[1],
        "hidden_size": spec.outputs[0].shape[2],
        "fingerprint": vision_fingerprint(llava_model, opset=opset, fp16=fp16), **(info or {}),
    }
    return _export({VISION_PART: vision_graph_spec(traced)}, {VISION_PART: spec}, (VISION_PART,), out,
                   opset=opset, fp16=fp16, overwrite=overwrite, manifest=manifest)


def _export(specs: dict[str, GraphSpec], ref_specs: dict[str, GraphSpec], parts: tuple[str, ...], out: str | Path,
            *, opset: int, fp16: bool, overwrite: bool, manifest: dict[str, Any]) -> dict[str, Any]:
    """Trace and check `parts`, write the manifest, move the directory into place; returns the manifest."""
    out = Path(out)
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported by the exporter; use {OPSETS.start}..{OPSETS.stop - 1}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    dtype = "float16" if fp16 else "float32"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the export to the robot
    try:
        graphs = {}
        for name in parts:
            path = tmp / f"{name}.onnx"
            _trace(specs[name], path, opset, torch.float16 if fp16 else torch.float32)
            graphs[name] = _describe(specs[name], path.name, dtype) | {"data_file": _weights_file(path)}
            graphs[name]["check"] = check_graph(path, ref_specs[name], dtype)
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "opset": opset, "dtype": dtype,
                    "torch_version": torch.__version__, "graphs": graphs, **manifest}
        write_manifest(tmp, manifest)
        _move_into_place(tmp, out, overwrite)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _trace(spec: GraphSpec, path: Path, opset: int, dtype: torch.dtype) -> None:
    """torch.onnx.export of one part, with named inputs/outputs and its dynamic axes.

    Traced into a scratch directory: a graph over protobuf's 2 GiB (SAM ViT-H) comes out as one file
    per weight, which `_weights_file` gathers into a single `<part>.onnx.data` next to the graph.
    """
    scratch = path.parent / f".trace-{spec.name}"
    scratch.mkdir()
    traced = scratch / path.name
    tensors = spec.inputs + spec.outputs
    with torch.no_grad(), torch.random.fork_rng(), warnings.catch_warnings():
        # the trace specialises on the fixed image size (transformers' shape checks) and torch flags the
        # legacy exporter as deprecated; both are expected here
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.manual_seed(0)
        torch.onnx.export(
            spec.module, spec.example(spec.export_size, dtype), str(traced),
            input_names=[t.name for t in spec.inputs], output_names=[t.name for t in spec.outputs],
            dynamic_axes={t.name: t.dynamic_axes() for t in tensors if t.dynamic_axes()},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    if len(list(scratch.iterdir())) == 1:
        traced.rename(path)
    else:
        onnx.save_model(onnx.load(str(traced)), str(path), save_as_external_data=True,
                        all_tensors_to_one_file=True, location=f"{path.name}.data")
        path.with_name(f"{path.name}.data").chmod(0o644)  # onnx writes it owner-only
    shutil.rmtree(scratch)
    onnx.checker.check_model(str(path))


def _weights_file(path: Path) -> str | None:
    """Name of the graph's external weights file, or None when the weights are inside the graph."""
    data = path.with_name(f"{path.name}.data")
    return data.name if data.is_file() else None


def _describe(spec: GraphSpec, file: str, dtype: str) -> dict[str, Any]:
    def tensor(t: TensorSpec) -> dict[str, Any]:
        return {"name": t.name, "shape": list(t.shape), "dtype": dtype}

    return {"file": file, "inputs": [tensor(t) for t in spec.inputs], "outputs": [tensor(t) for t in spec.outputs]}


def check_graph(path: Path, reference: GraphSpec, dtype: str) -> dict[str, Any]:
    """Run the graph in onnxruntime (CPU) at each check size; compare every output with float32 torch."""
    session = create_session(path, [CPU])
    atol, rtol = TOLERANCE[dtype]
    worst, allowed = 0.0, float("inf")
    for size in reference.check_sizes:
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(size)
            inputs = reference.example(size, torch.float32)
            expected = reference.module(*inputs)
        expected = expected if isinstance(expected, tuple) else (expected,)
        feeds = {t.name: x.numpy().astype(dtype) for t, x in zip(reference.inputs, inputs)}
        got = session.run([t.name for t in reference.outputs], feeds)
        for t, want, have in zip(reference.outputs, expected, got):
            want = want.numpy()
            if have.shape != want.shape:
                raise RuntimeError(f"{path.name}: output {t.name} has shape {have.shape} in onnxruntime, "
                                   f"{want.shape} in torch ({reference.name} size {size})")
            diff = float(np.abs(have.astype(np.float32) - want).max())
            limit = atol + rtol * float(np.abs(want).max())
            if diff > limit:
                raise RuntimeError(f"{path.name}: output {t.name} differs from torch by {diff:.3g} "
                                   f"(tolerance {limit:.3g}) at {reference.name} size {size}")
            worst, allowed = max(worst, diff), min(allowed, limit)
    return {"max_abs_diff": worst, "tolerance": allowed, "sizes": list(reference.check_sizes)}


def _move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished export over `out`; an existing `out` is replaced only with `overwrite`."""
    if not out.exists():
        try:
            tmp.rename(out)
            return
        except OSError:
            if not overwrite:  # another process exported to `out` meanwhile
                raise FileExistsError(f"{out} appeared during export; pass --overwrite to replace it") from None
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
