"""The LLaVA-style multimodal LLM: loaded whole, or composed from a CLIP vision tower and a causal LM.

Loading is lean: pretrained weights are read once, straight into the target dtype and device
(transformers' meta-device loading), and composition puts the loaded language model into a LLaVA
skeleton built on the meta device, so a model exists once. Randomly initialised parts (a random
tower or LM, the projector of a composed model, LoRA) are initialised on the CPU from seeds, so they
come out bit-identical whatever the device. A small offline LM such as SmolLM2-135M-Instruct serves
as the language model behind the same code path as LLaVA-1.5-7B.
"""

from __future__ import annotations

import math
import warnings

import torch
from peft import LoraConfig as PeftLoraConfig, get_peft_model
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
)
from transformers.integrations import is_deepspeed_zero3_enabled

from keyseg_core.config.model import IMAGE_TOKEN, BackboneConfig, LoraConfig
from keyseg_core.modeling.processor import add_special_tokens
from keyseg_core.modeling.stems import conv_stem_like
from keyseg_core.pretrained.offline_llm import resolve_pretrained

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


def device_map(device: str | torch.device) -> dict | None:
    """from_pretrained's placement: everything on `device`; none under ZeRO-3, which partitions at load."""
    return None if is_deepspeed_zero3_enabled() else {"": torch.device(device)}


def build_mllm(
    cfg: BackboneConfig, tokenizer, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> LlavaForConditionalGeneration:
    """Build the MLLM in `dtype` on `device`, its embeddings sized to the tokenizer (new rows = mean row)."""
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if cfg.mllm is not None:
        model = LlavaForConditionalGeneration.from_pretrained(
            resolve_pretrained(cfg.mllm), dtype=dtype, device_map=device_map(device))
        model.config.image_token_id = image_id
        _add_token_rows(model, len(tokenizer))
        return model
    vision = None
    if cfg.vision != "random":
        vision = CLIPVisionModel.from_pretrained(resolve_pretrained(cfg.vision), dtype=dtype, device_map=device_map(device))
    if cfg.llm == "random":
        model = _compose_random_llm(cfg, tokenizer, image_id, vision)
        _add_token_rows(model, len(tokenizer))  # on the CPU in float32, as the random LM was drawn
        model = model.to(device=device, dtype=dtype)
    else:
        model = _compose_pretrained_llm(cfg, image_id, vision, dtype, device)
        _add_token_rows(model, len(tokenizer))
    if cfg.vision_stem == "conv":
        embeddings = model.model.vision_tower.embeddings
        try:
            embeddings.patch_embedding = conv_stem_like(embeddings.patch_embedding, seed=cfg.seed + 5)
        except ValueError as exc:
            raise ValueError(f"vision_stem: {exc} (vision_config.patch_size)") from exc
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


def _llava_config(cfg: BackboneConfig, vision_cfg: CLIPVisionConfig, text_cfg, image_id: int) -> LlavaConfig:
    return LlavaConfig(
        vision_config=vision_cfg,
        text_config=text_cfg,
        image_token_id=image_id,
        vision_feature_layer=cfg.vision_feature_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=getattr(text_cfg, "tie_word_embeddings", False),
    )


def random_llava_config(cfg: BackboneConfig, tokenizer) -> LlavaConfig:
    """The LlavaConfig of `cfg`'s random LM and tower (`llm: random`, `vision: random`): the shapes a
    real-size checkpoint of random weights is written in (`keyseg_core.runtime.load_bench`)."""
    text = LlamaConfig(**{**RANDOM_LLM_DEFAULTS, **cfg.llm_config, "vocab_size": len(tokenizer)})
    return _llava_config(cfg, _vision_config(cfg, None), text, tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def _vision_config(cfg: BackboneConfig, vision: CLIPVisionModel | None) -> CLIPVisionConfig:
    return vision.config if vision is not None else random_vision_config(cfg)


def random_vision_config(cfg: BackboneConfig) -> CLIPVisionConfig:
    """The CLIP tower config of `vision: random` (a tower trained here from scratch)."""
    return CLIPVisionConfig(**{**RANDOM_VISION_DEFAULTS, **cfg.vision_config})


def _compose_random_llm(cfg: BackboneConfig, tokenizer, image_id: int, vision: CLIPVisionModel | None):
    """A random LM: the whole LLaVA drawn on the CPU in float32 from the seeds (one LM, nothing loaded)."""
    torch.manual_seed(cfg.seed)
    llm = LlamaForCausalLM(LlamaConfig(**{**RANDOM_LLM_DEFAULTS, **cfg.llm_config, "vocab_size": len(tokenizer)}))
    if cfg.llm_layers is not None:
        _truncate_layers(llm, cfg.llm_layers)
    config = _llava_config(cfg, _vision_config(cfg, vision), llm.config, image_id)
    torch.manual_seed(cfg.seed + 1)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(llm.model.state_dict())
    if not config.tie_word_embeddings:
        model.lm_head.load_state_dict(llm.lm_head.state_dict())
    else:
        model.tie_weights()
    if vision is not None:
        model.model.vision_tower = vision
    return model


def _compose_pretrained_llm(
    cfg: BackboneConfig, image_id: int, vision: CLIPVisionModel | None, dtype: torch.dtype, device
) -> LlavaForConditionalGeneration:
    """The loaded LM (read once, in `dtype` on `device`) goes into a LLaVA skeleton built on the meta
    device; a random tower is drawn first from seed + 1 (as LLaVA's constructor would draw it) and a
    random projector from seed + 3, both on the CPU."""
    llm = AutoModelForCausalLM.from_pretrained(resolve_pretrained(cfg.llm), dtype=dtype, device_map=device_map(device))
    if cfg.llm_layers is not None:
        _truncate_layers(llm, cfg.llm_layers)
    vision_cfg = _vision_config(cfg, vision)
    config = _llava_config(cfg, vision_cfg, llm.config, image_id)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
    if vision is None:
        torch.manual_seed(cfg.seed + 1)
        vision = AutoModel.from_config(config.vision_config)
    model.model.vision_tower = vision
    model.model.multi_modal_projector = _random_projector(model.model.multi_modal_projector, config, cfg.seed + 3)
    model.model.language_model = llm.model
    model.lm_head = llm.lm_head
    if config.tie_word_embeddings:
        model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"composed LLaVA left on the meta device: {left[:5]}")
    return model.to(device=device, dtype=dtype)


@torch.no_grad()
def _random_projector(skeleton: torch.nn.Module, config: LlavaConfig, seed: int) -> torch.nn.Module:
    """The projector's linear layers ~ N(0, initializer_range), biases 0, from a CPU generator."""
    projector = skeleton.to_empty(device="cpu").float()
    generator = torch.Generator().manual_seed(seed)
    std = getattr(config.text_config, "initializer_range", 0.02)
    for module in projector.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight.normal_(0.0, std, generator=generator)
            if module.bias is not None:
                module.bias.zero_()
    return projector


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


def apply_lora(model: LlavaForConditionalGeneration, lora: LoraConfig, new_token_ids: list[int], seed: int):
    """LoRA on the language model's projections + trainable rows for the new tokens; freezes the rest.

    The regex keeps LoRA off the CLIP tower, which has modules of the same names. LoRA's A matrices
    are drawn from a CPU generator seeded with `seed` (peft's kaiming-uniform rule), so they are the
    same whether the language model sits on a CPU or a GPU; B starts at zero as in peft.
    """
    targets = "|".join(lora.target_modules)
    token_rows: dict[str, list[int]] = {"embed_tokens": new_token_ids}
    if not model.config.tie_word_embeddings:
        token_rows["lm_head"] = new_token_ids
    peft_cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=rf".*language_model.*\.({targets})$",
        trainable_token_indices=token_rows,
    )
    with warnings.catch_warnings():
        # peft probes a transformers attribute deprecated in 5.x; the warning is theirs, not the user's
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        wrapped = get_peft_model(model, peft_cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if ".lora_A." in name:
                drawn = torch.empty(param.shape, dtype=torch.float32)
                torch.nn.init.kaiming_uniform_(drawn, a=math.sqrt(5), generator=generator)
                param.copy_(drawn)
    return wrapped
