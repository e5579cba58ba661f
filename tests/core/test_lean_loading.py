"""Lean loading: one language model (read once, in the target dtype), random parts drawn on the CPU
from seeds, a dtype-independent frozen fingerprint, and checkpoints that load straight into bfloat16."""

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration
from transformers.models.llama import modeling_llama

from keyseg_core.config.model import BackboneConfig, KeySegConfig, SamConfig
from keyseg_core.modeling.build import OFFLINE_LLM, build_model
from keyseg_core.modeling.mllm import RANDOM_VISION_DEFAULTS
from keyseg_core.weights.checkpoint import META_FILE, frozen_fingerprint, load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def pretrained_llm(tmp_path_factory):
    """A small Llama saved like a hub model, standing in for a pretrained causal LM."""
    path = tmp_path_factory.mktemp("llm")
    torch.manual_seed(11)
    LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, vocab_size=49152, tie_word_embeddings=True)).save_pretrained(path)
    return path


def composed(llm_path) -> KeySegConfig:
    return KeySegConfig(name="composed", backbone=BackboneConfig(llm=str(llm_path), tokenizer=OFFLINE_LLM),
                        sam=SamConfig(size="tiny", image_size=128))


def test_one_language_model_read_once_in_the_target_dtype(pretrained_llm, monkeypatch):
    skeletons, loads = [], []
    init = LlavaForConditionalGeneration.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        skeletons.append(self.model.language_model.embed_tokens.weight.is_meta)

    load = modeling_llama.LlamaForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(kwargs.get("dtype"))
        return load(cls, *args, **kwargs)

    monkeypatch.setattr(LlavaForConditionalGeneration, "__init__", recording)
    monkeypatch.setattr(modeling_llama.LlamaForCausalLM, "from_pretrained", classmethod(counting))
    model, _ = build_model(composed(pretrained_llm), dtype=torch.bfloat16)
    assert loads == [torch.bfloat16]  # read once, straight into the target dtype
    assert skeletons == [True]  # the LLaVA around it holds no second (random) language model
    lm = model.llava.model.language_model
    assert {p.dtype for p in lm.parameters()} == {torch.bfloat16}
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    reference = LlamaForCausalLM.from_pretrained(pretrained_llm)
    assert torch.equal(lm.layers[0].mlp.up_proj.weight, reference.model.layers[0].mlp.up_proj.weight.bfloat16())


def test_random_parts_come_from_seeds_not_from_the_global_rng(pretrained_llm):
    torch.manual_seed(123)
    a, _ = build_model(composed(pretrained_llm))
    torch.manual_seed(456)
    b, _ = build_model(composed(pretrained_llm))
    for (name, x), (_, y) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(x, y), name  # tower, projector, LoRA A, SAM, fusion, keyword head
    # the random tower is the one LLaVA's own constructor draws from seed + 1
    llava = a.llava
    torch.manual_seed(a.config.backbone.seed + 1)
    config = LlavaConfig(vision_config=llava.config.vision_config.to_dict() | {"model_type": "clip_vision_model"},
                         text_config=LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, vocab_size=100))
    drawn = LlavaForConditionalGeneration(config).model.vision_tower
    assert all(torch.equal(x, y) for x, y in zip(drawn.parameters(), llava.model.vision_tower.parameters()))
    assert llava.config.vision_config.hidden_size == RANDOM_VISION_DEFAULTS["hidden_size"]


def test_fingerprint_is_dtype_independent_and_bf16_load_is_direct(tmp_path, tiny):
    model, _ = tiny
    saved = save_checkpoint(model, tmp_path / "ckpt")
    half, _ = build_model(model.config, dtype=torch.bfloat16)
    assert frozen_fingerprint(half) == frozen_fingerprint(model)
    assert frozen_fingerprint(half, version=1) != frozen_fingerprint(model, version=1)
    loaded, _ = load_checkpoint(saved, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    # a checkpoint from before fingerprint version 2 still loads (checked in float32, then cast)
    meta = json.loads((saved / META_FILE).read_text())
    meta.pop("fingerprint_version")
    meta["frozen_fingerprint"] = frozen_fingerprint(model, version=1)
    (saved / META_FILE).write_text(json.dumps(meta))
    loaded, _ = load_checkpoint(saved, dtype=torch.bfloat16)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
