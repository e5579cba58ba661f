"""The LLaVA-style multimodal LLM: loaded whole, or composed from a CLIP vision tower and a causal LM.

Composition builds a `LlavaForConditionalGeneration` from a CLIPVisionConfig and the LM's own config
and copies the LM's (and, if pretrained, the tower's) weights in, so a small offline LM such as
SmolLM2-135M-Instruct serves as the language model behind the same code path as LLaVA-1.5-7B.
"""

from __future__ import annotations

import warnings

import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)

from .config import IMAGE_TOKEN, BackboneConfig, LoraSettings
from .offline import resolve_pretrained
from .processor import add_special_tokens

# A small Llama for `llm: random` when llm_config gives nothing else.
RANDOM_LLM_DEFAULTS = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    max_position_embeddings=4096, tie_word_embeddings=True,
)
RANDOM_VISION_DEFAULTS = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14,
)


def load_tokenizer(cfg: BackboneConfig):
    """The backbone's tokenizer with [SEG], [KEY] and <image> registered."""
    source = cfg.tokenizer or cfg.mllm or cfg.llm
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(source))
    add_special_tokens(tokenizer)
    return tokenizer


def build_mllm(cfg: BackboneConfig, tokenizer, dtype: torch.dtype = torch.float32) -> LlavaForConditionalGeneration:
    """Build the MLLM and size its embeddings to the tokenizer (new rows start at the mean embedding)."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if cfg.mllm is not None:
        model = LlavaForConditionalGeneration.from_pretrained(resolve_pretrained(cfg.mllm), dtype=dtype)
        model.config.image_token_id = image_id
    else:
        model = _compose(cfg, tokenizer, image_id, dtype)
    _add_token_rows(model, len(tokenizer))
    return model


@torch.no_grad()
def _add_token_rows(model: LlavaForConditionalGeneration, vocab_size: int) -> None:
    """Grow the embedding (and untied lm_head) tables to the tokenizer; new rows = the mean row.

    Deterministic on purpose (transformers' mean_resizing samples them): these rows are part of the
    frozen base, which must come out the same on every device for a checkpoint to load anywhere.
    """
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    tables = [model.get_input_embeddings().weight]
    if not model.config.tie_word_embeddings:
        tables.append(model.get_output_embeddings().weight)
    for table in tables:
        table[old:] = table[:old].double().mean(dim=0).to(table.dtype)


def _compose(cfg: BackboneConfig, tokenizer, image_id: int, dtype: torch.dtype) -> LlavaForConditionalGeneration:
    torch.manual_seed(cfg.seed)
    if cfg.llm == "random":
        llm = LlamaForCausalLM(LlamaConfig(**{**RANDOM_LLM_DEFAULTS, **cfg.llm_config, "vocab_size": len(tokenizer)}))
    else:
        llm = AutoModelForCausalLM.from_pretrained(resolve_pretrained(cfg.llm), dtype=dtype)
    if cfg.llm_layers is not None:
        _truncate_layers(llm, cfg.llm_layers)
    if cfg.vision == "random":
        vision_cfg, vision = CLIPVisionConfig(**{**RANDOM_VISION_DEFAULTS, **cfg.vision_config}), None
    else:
        vision = CLIPVisionModel.from_pretrained(resolve_pretrained(cfg.vision), dtype=dtype)
        vision_cfg = vision.config
    text_cfg = llm.config
    config = LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_id=image_id,
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=getattr(text_cfg, "tie_word_embeddings", False),
    )
    torch.manual_seed(cfg.seed + 1)
    model = LlavaForConditionalGeneration(config).to(dtype)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
    else:
        model.tie_weights()
    if vision is not None:
        model.model.vision_tower.load_state_dict(vision.state_dict())
    return model


def _truncate_layers(llm, keep: int) -> None:
    """Keep the first `keep` decoder layers (their pretrained weights) and say so in the config."""
    layers = llm.model.layers
    if keep > len(layers):
        raise ValueError(f"backbone.llm_layers: {keep} exceeds the LLM's {len(layers)} layers")
    llm.model.layers = layers[:keep]
    llm.config.num_hidden_layers = keep
    if getattr(llm.config, "layer_types", None):
        llm.config.layer_types = llm.config.layer_types[:keep]


def num_image_tokens(model: LlavaForConditionalGeneration) -> int:
    """Visual tokens per image: patches of the tower (the CLS token is dropped, 'default' strategy)."""
    vc = model.config.vision_config
    return (vc.image_size // vc.patch_size) ** 2


def apply_lora(model: LlavaForConditionalGeneration, lora: LoraSettings, new_token_ids: list[int]):
    """LoRA on the language model's projections + trainable rows for the new tokens; freezes the rest.

    The regex keeps LoRA off the CLIP tower, which has modules of the same names.
    """
    targets = "|".join(lora.target_modules)
    token_rows: dict[str, list[int]] = {"embed_tokens": new_token_ids}
    if not model.config.tie_word_embeddings:
        token_rows["lm_head"] = new_token_ids
    peft_cfg = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=rf".*language_model.*\.({targets})$",
        trainable_token_indices=token_rows,
    )
    with warnings.catch_warnings():
        # peft probes a transformers attribute deprecated in 5.x; the warning is theirs, not the user's
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, peft_cfg)
