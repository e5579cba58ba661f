"""Named model configurations (a registry of builders) and `build_model`, which assembles the parts.

Registry entries return a fresh `KeySegConfig`; `build_model` turns any config into a KeySegModel and
its processor. Randomly initialised parts are seeded from `backbone.seed`, so a config rebuilds the
same weights on the same torch version (checkpoints verify this with a fingerprint).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from keyseg_core.config.model import BackboneConfig, FusionConfig, KeySegConfig, LoraConfig, SamConfig, TrainableConfig
from keyseg_core.modeling.fusion import FusionModule
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.keyword_head import KeywordHead
from keyseg_core.modeling.mllm import apply_lora, build_mllm, load_tokenizer, num_image_tokens
from keyseg_core.modeling.processor import KeySegProcessor, special_token_ids
from keyseg_core.modeling.sam import SamSegmenter, build_sam

OFFLINE_LLM = "offline:smollm2-135m-instruct"

# Architecture facts for random-weight timing runs (same shapes as the released checkpoints).
LLAMA_7B = dict(
    hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False,
)
CLIP_L_336 = dict(
    hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
    image_size=336, patch_size=14, projection_dim=768,
)
# Heads of the fusion attentions in SAM's 256-wide prompt space: 32-wide heads, as SAM's own mask
# decoder uses (8 x 32 = 256). 32 heads there would leave 8 dimensions per head.
PROMPT_SPACE_HEADS = 8
CLIP_B_16 = dict(
    hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    image_size=224, patch_size=16, projection_dim=512,
)


def _tiny() -> KeySegConfig:
    """Tiny random model (real SmolLM2 tokenizer): tests and CPU smoke runs, tens of ms per query."""
    return KeySegConfig(
        name="tiny",
        backbone=BackboneConfig(llm="random", tokenizer=OFFLINE_LLM, vision="random"),
        sam=SamConfig(size="tiny", image_size=128),
        fusion=FusionConfig(num_heads=4),
    )


def _keyseg_tiny() -> KeySegConfig:
    """KeySeg-Tiny, the shipped default: the first 6 layers of the real SmolLM2-135M-Instruct (LoRA on
    its attention), a small CLIP-shaped tower and a small SAM trained from scratch (no pretrained
    weights exist offline for either, so they train and ship), [SEG] + [KEY] + CA + SA fusion."""
    return KeySegConfig(
        name="keyseg-tiny",
        backbone=BackboneConfig(
            llm=OFFLINE_LLM, llm_layers=6, vision="random", vision_feature_layer=-1,
            vision_config=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4, num_attention_heads=3,
                               image_size=128, patch_size=16),
        ),
        sam=SamConfig(
            size="tiny", image_size=192,  # 8-px patches (24x24 grid): masks learn ~2x sooner than 16-px at 320
            vision_config=dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, global_attn_indexes=[1, 3],
                               patch_size=8, window_size=8, output_channels=128, mlp_dim=512, num_pos_feats=64),
            mask_decoder_config=dict(mlp_dim=512, num_attention_heads=4, iou_head_hidden_dim=128),
        ),
        fusion=FusionConfig(num_heads=4),
        lora=LoraConfig(r=16, alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        trainable=TrainableConfig(vision_tower=True, projector=True, sam_image_encoder=True, sam_prompt_encoder=True),
    )


def _smollm2_sam_b() -> KeySegConfig:
    """Real SmolLM2-135M-Instruct LLM (offline) + CLIP-B/16-shaped tower + SAM ViT-B (random: none offline)."""
    return KeySegConfig(
        name="smollm2-sam-b",
        backbone=BackboneConfig(llm=OFFLINE_LLM, vision="random", vision_config=dict(CLIP_B_16)),
        sam=SamConfig(size="vit_b"),
        fusion=FusionConfig(num_heads=8),
    )


def _llava7b_sam_h() -> KeySegConfig:
    """The paper's setting: LLaVA-1.5-7B from the hub + SAM ViT-H (point sam.weights at sam_vit_h_4b8939.pth)."""
    return KeySegConfig(
        name="llava7b-sam-h",
        backbone=BackboneConfig(mllm="llava-hf/llava-1.5-7b-hf"),
        sam=SamConfig(size="vit_h"),
        fusion=FusionConfig(num_heads=PROMPT_SPACE_HEADS),
    )


def _llava7b_sam_h_random() -> KeySegConfig:
    """LLaVA-1.5-7B + SAM ViT-H shapes with random weights: real-size timing without downloads."""
    return KeySegConfig(
        name="llava7b-sam-h-random",
        backbone=BackboneConfig(
            llm="random", llm_config=dict(LLAMA_7B), tokenizer=OFFLINE_LLM,
            vision="random", vision_config=dict(CLIP_L_336),
        ),
        sam=SamConfig(size="vit_h"),
        fusion=FusionConfig(num_heads=PROMPT_SPACE_HEADS),
    )


MODEL_REGISTRY: dict[str, Callable[[], KeySegConfig]] = {
    "tiny": _tiny,
    "keyseg-tiny": _keyseg_tiny,
    "smollm2-sam-b": _smollm2_sam_b,
    "llava7b-sam-h": _llava7b_sam_h,
    "llava7b-sam-h-random": _llava7b_sam_h_random,
}


def registry_config(name: str) -> KeySegConfig:
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model config '{name}'; available: {', '.join(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name]()


def build_model(
    config: KeySegConfig, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> tuple[KeySegModel, KeySegProcessor]:
    """Assemble a KeySegModel from its config; frozen/trainable split as in the paper and LISA.

    Lean: pretrained weights are read once, straight into `dtype` on `device`, and no part exists
    twice. Random parts are initialised on the CPU from the config's seeds and then moved, so a random
    part comes out bit-identical whatever the target device: a checkpoint trained on a GPU loads on a CPU.
    """
    # Subnormal floats (tiny gradients, AdamW's second moments) run 10-50x slower on x86 CPUs and
    # made CPU training steps swing from 1 s to 30 s; flushing them to zero changes no result we use.
    torch.set_flush_denormal(True)
    tokenizer = load_tokenizer(config.backbone)
    ids = special_token_ids(tokenizer)
    llava = build_mllm(config.backbone, tokenizer, dtype=dtype, device=device)
    hidden = llava.config.text_config.hidden_size
    # freezes all but LoRA + new rows
    mllm = apply_lora(llava, config.lora, [ids.seg, ids.key], seed=config.backbone.seed + 4)
    torch.manual_seed(config.backbone.seed + 2)  # SAM first, then fusion, from this one generator
    sam = build_sam_segmenter(config, dtype, device)
    fusion = FusionModule(hidden, sam.prompt_dim, config.fusion)
    keyword_head = KeywordHead(hidden, config.keyword.tau)
    model = KeySegModel(config, mllm=mllm, sam=sam, fusion=fusion, keyword_head=keyword_head, token_ids=ids)
    model.to(device=device, dtype=dtype)
    _set_trainable(model)
    processor = KeySegProcessor(
        tokenizer, config, clip_size=llava.config.vision_config.image_size,
        num_image_tokens=num_image_tokens(llava), sam_size=config.sam.image_size,
    )
    return model, processor


def build_sam_segmenter(config: KeySegConfig, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> SamSegmenter:
    """KeySeg's SAM part alone (export of a config's SAM needs no LLM). Seeded by the caller:
    `build_model` draws it from the global generator at seed + 2, `seeded_sam_segmenter` forks it.
    Pretrained SAM weights load straight into `dtype` on `device` (`build_sam`)."""
    return SamSegmenter(build_sam(config.sam, dtype, device), config.sam.image_size)


def seeded_sam_segmenter(config: KeySegConfig) -> SamSegmenter:
    """The SAM part exactly as `build_model` draws it, without touching the global generator."""
    with torch.random.fork_rng():
        torch.manual_seed(config.backbone.seed + 2)
        return build_sam_segmenter(config)


def _set_trainable(model: KeySegModel) -> None:
    """Trainable: LoRA, new token rows (set by peft), fusion, keyword head, SAM mask decoder, and the
    base parts `config.trainable` names. Frozen: the rest."""
    for p in model.sam.parameters():
        p.requires_grad_(False)
    wanted = model.config.trainable
    modules = [model.fusion, model.keyword_head, model.sam.sam.mask_decoder]
    optional = {
        "vision_tower": model.llava.model.vision_tower,
        "projector": model.llava.model.multi_modal_projector,
        "sam_image_encoder": model.sam.sam.vision_encoder,
        "sam_prompt_encoder": model.sam.sam.prompt_encoder,
    }
    modules += [module for name, module in optional.items() if getattr(wanted, name)]
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
    # SAM's Fourier position matrix is a fixed buffer in segment-anything; transformers makes it a
    # parameter shared with the prompt encoder. Keep it fixed (and so covered by the fingerprint).
    model.sam.sam.shared_image_embedding.positional_embedding.requires_grad_(False)
