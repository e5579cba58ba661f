"""onnxruntime sessions with validated execution providers.

Providers are tried in the order given; by default the fastest one installed (CUDA, else CPU).
TensorRT's provider is used only when asked for by name, because its first run builds an engine
(minutes for SAM ViT-H); its engines are cached under keyseg's cache dir, like yolo_ros and
Isaac ROS cache theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
DEFAULT_ORDER = (CUDA, CPU)


def resolve_providers(providers: list[str] | tuple[str, ...] | None) -> list[str]:
    """None -> the default providers that are installed; named ones must all be installed."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if providers is None:
        return [p for p in DEFAULT_ORDER if p in available]
    if not providers:
        raise ValueError("providers: give at least one onnxruntime execution provider (or None for the default)")
    missing = [p for p in providers if p not in available]
    if missing:
        raise ValueError(f"onnxruntime execution provider(s) {', '.join(missing)} not installed here; "
                         f"available: {', '.join(available)}")
    return list(providers)


def create_session(path: str | Path, providers: list[str] | tuple[str, ...] | None = None, *,
                   engine_cache: Path | None = None, fp16: bool = False, threads: int | None = None) -> Any:
    """An InferenceSession for one graph (warnings silenced: ORT reports harmless constant-folding misses).

    threads: intra-op threads (None: onnxruntime's default, one per physical core).
    """
    import onnxruntime as ort

    if threads is not None and threads < 1:
        raise ValueError(f"threads: {threads} must be >= 1")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads or 0
    chosen: list[Any] = []
    for name in resolve_providers(providers):
        if name == TENSORRT and engine_cache is not None:
            engine_cache.mkdir(parents=True, exist_ok=True)
            chosen.append((name, {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engine_cache),
                                  "trt_fp16_enable": fp16}))
        else:
            chosen.append(name)
    return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
