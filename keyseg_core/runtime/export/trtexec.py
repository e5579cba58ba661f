"""trtexec command lines for an export directory, for building TensorRT engines on the robot.

TensorRT cannot be installed here, so these commands are generated from the manifest but never run
in this project's tests; the shapes they name are the ones onnxruntime checked.
"""

from __future__ import annotations

from pathlib import Path

from keyseg_core.runtime.export.manifest import read_manifest

ENGINE_DIR = "$HOME/.cache/keyseg/trt"  # left for the shell to expand (it does not expand ~ after =)


def trtexec_commands(directory: str | Path, *, fp16: bool = True, max_sizes: dict[str, int] | None = None,
                     engine_dir: str = ENGINE_DIR) -> list[str]:
    """`mkdir -p` of the engine dir, then one trtexec line per graph.

    Dynamic axes get min 1, opt 1 and max from `max_sizes` (axis name -> size; default batch 4, 8 prompts).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    limits = {"batch": 4, "num_prompts": 8} | (max_sizes or {})
    engines = f"{engine_dir}/{manifest['fingerprint'][:16]}"
    lines = [f"mkdir -p {engines}"]
    for name, graph in manifest["graphs"].items():
        shapes = {}
        for bound in ("min", "opt", "max"):
            shapes[bound] = ",".join(
                t["name"] + ":" + "x".join(str(limits[d] if bound == "max" else 1) if isinstance(d, str) else str(d)
                                           for d in t["shape"])
                for t in graph["inputs"]
            )
        engine = f"{engines}/{name}{'_fp16' if fp16 else ''}.engine"
        lines.append(f"trtexec --onnx={directory / graph['file']} --saveEngine={engine}{' --fp16' if fp16 else ''} "
                     f"--minShapes={shapes['min']} --optShapes={shapes['opt']} --maxShapes={shapes['max']}")
    return lines
