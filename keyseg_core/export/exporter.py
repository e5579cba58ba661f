"""Export SAM's image encoder and mask head to ONNX through the real modules, checked in onnxruntime.

`export_sam` traces each part with the TorchScript exporter (`dynamo=False`: it needs no extra
package and handles transformers' SAM), names its inputs and dynamic axes, runs every graph in
onnxruntime (CPU) at dynamic sizes other than the traced one, and compares with the float32 torch
module. The export directory appears only after every check has passed: files are written to a
temporary sibling directory that is then renamed into place.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from ..backends.ort import CPU, create_session
from ..sam import SamSegmenter
from .graphs import PARTS, GraphSpec, TensorSpec, embedding_shape, graph_specs
from .manifest import FORMAT, FORMAT_VERSION, write_manifest

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
    out = Path(out)
    if opset not in OPSETS:
        raise ValueError(f"opset {opset} is not supported by the exporter; use {OPSETS.start}..{OPSETS.stop - 1}")
    if not parts or any(p not in PARTS for p in parts):
        raise ValueError(f"parts {parts}: choose one or more of {', '.join(PARTS)}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    reference = copy.deepcopy(sam).to("cpu", torch.float32).eval()
    traced = copy.deepcopy(reference).half() if fp16 else reference
    dtype = "float16" if fp16 else "float32"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the export to the robot
    try:
        specs, ref_specs = graph_specs(traced), graph_specs(reference)
        graphs = {}
        for name in parts:
            path = tmp / f"{name}.onnx"
            _trace(specs[name], path, opset, torch.float16 if fp16 else torch.float32)
            graphs[name] = _describe(specs[name], path.name, dtype) | {"data_file": _weights_file(path)}
            graphs[name]["check"] = check_graph(path, ref_specs[name], dtype)
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "opset": opset, "dtype": dtype,
            "image_size": sam.image_size, "prompt_dim": sam.prompt_dim,
            "embedding_shape": list(embedding_shape(sam)),
            "fingerprint": sam_fingerprint(sam, opset=opset, fp16=fp16, parts=parts),
            "torch_version": torch.__version__, "graphs": graphs, **(info or {}),
        }
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
