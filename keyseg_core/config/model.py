"""KeySeg configuration as validated dataclasses.

Every field carries help text; `KeySegConfig.from_dict` rejects unknown keys and wrong types with the
dotted path of the offending key (e.g. `fusion.cross_atn`), and `__post_init__` checks combinations.
Configs are saved as sorted JSON inside every checkpoint, so a checkpoint names its base models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from keyseg_core.atomic import atomic_write_json
from keyseg_core.config.files import load_config
from keyseg_core.config.presets import FUSION_PRESETS, LOSS_PRESETS, resolve_preset
from keyseg_core.config.schema import build_dataclass, help_field

SEG_TOKEN = "[SEG]"
KEY_TOKEN = "[KEY]"
IMAGE_TOKEN = "<image>"


@dataclass
class BackboneConfig:
    """Where the multimodal LLM comes from: one LLaVA checkpoint, or a vision tower + a causal LM."""

    mllm: str | None = help_field(
        "hub id or local dir of a LlavaForConditionalGeneration (e.g. llava-hf/llava-1.5-7b-hf); "
        "when set, `llm`, `vision` and their configs are ignored",
        default=None,
    )
    llm: str = help_field(
        "causal LM: hub id, local dir, 'offline:smollm2-135m-instruct', or 'random' (built from llm_config)",
        default="offline:smollm2-135m-instruct",
    )
    llm_config: dict[str, Any] = help_field(
        "LlamaConfig overrides when llm == 'random' (hidden_size, num_hidden_layers, ...)",
        default_factory=dict,
    )
    vision: str = help_field(
        "CLIP vision tower: hub id or local dir of a CLIPVisionModel, or 'random' (built from vision_config)",
        default="random",
    )
    vision_config: dict[str, Any] = help_field(
        "CLIPVisionConfig overrides when vision == 'random'", default_factory=dict
    )
    tokenizer: str | None = help_field(
        "tokenizer source; defaults to `mllm`, else `llm` (a random LLM needs one)", default=None
    )
    llm_layers: int | None = help_field(
        "keep only the first N decoder layers of the causal LM (a cheaper LLM for small models); "
        "None keeps all", default=None,
    )
    vision_feature_layer: int = help_field("vision layer fed to the projector (LLaVA-1.5: -2)", default=-2)
    image_preprocess: Literal["pad", "crop"] = help_field(
        "CLIP input: 'pad' = pad to a square with the mean colour, then resize (LLaVA-1.5); 'crop' = "
        "resize the short side, centre-crop (CLIP's own processor, as LISA and LLaVA-v1 use it)",
        default="pad",
    )
    vision_stem: Literal["patch", "conv"] = help_field(
        "patch embedding of a 'random' vision tower: 'patch' (one linear map per patch, CLIP's) or 'conv' "
        "(stride-2 3x3 convolutions, keyseg_core/modeling/stems.py: a from-scratch tower learns its patches sooner)",
        default="patch",
    )
    seed: int = help_field("seed for every randomly initialised part (recorded so loading reproduces it)", default=0)

    def __post_init__(self) -> None:
        if self.vision_stem not in ("patch", "conv"):
            raise ValueError(f"vision_stem: '{self.vision_stem}' is not 'patch' or 'conv'")
        if self.vision_stem == "conv" and (self.mllm is not None or self.vision != "random"):
            raise ValueError("vision_stem: 'conv' replaces the patch embedding of a 'random' tower only; "
                             "a pretrained tower keeps its own")
        if self.mllm is None and self.llm == "random" and self.tokenizer is None:
            raise ValueError("tokenizer: a 'random' llm needs a tokenizer source")
        if self.image_preprocess not in ("pad", "crop"):
            raise ValueError(f"image_preprocess: '{self.image_preprocess}' is not 'pad' or 'crop'")
        if self.llm_layers is not None and self.llm_layers < 1:
            raise ValueError(f"llm_layers: {self.llm_layers} must be >= 1 (or null for all layers)")


@dataclass
class SamConfig:
    """The SAM image encoder / prompt encoder / mask decoder."""

    weights: str = help_field(
        "'random', a segment-anything checkpoint (sam_vit_*.pth), a converted .safetensors, "
        "or a hub id / dir of a transformers SamModel",
        default="random",
    )
    size: Literal["vit_b", "vit_l", "vit_h", "tiny"] = help_field(
        "architecture when weights are 'random' or an original checkpoint", default="vit_b"
    )
    image_size: int = help_field("SAM input side (longest side is resized to it, then padded)", default=1024)
    vision_config: dict[str, Any] = help_field(
        "SamVisionConfig overrides on top of `size` (hidden_size, num_hidden_layers, window_size, "
        "output_channels, ...); output_channels is also the prompt width", default_factory=dict
    )
    mask_decoder_config: dict[str, Any] = help_field(
        "SamMaskDecoderConfig overrides on top of `size` (mlp_dim, num_hidden_layers, ...)", default_factory=dict
    )
    stem: Literal["patch", "conv"] = help_field(
        "patch embedding of a 'random' image encoder: 'patch' (SAM's) or 'conv' (keyseg_core/modeling/stems.py)",
        default="patch",
    )
    encoder: Literal["vit", "cnn"] = help_field(
        "image encoder of a 'random' SAM: 'vit' (SAM's) or 'cnn' (keyseg_core/modeling/cnn_encoder.py: a residual "
        "CNN with the ViT's output grid, which learns sooner from scratch)",
        default="vit",
    )
    cnn_width: int = help_field("channels of the CNN encoder's last stages (encoder: cnn)", default=128)

    def __post_init__(self) -> None:
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"stem: '{self.stem}' is not 'patch' or 'conv'")
        if self.encoder not in ("vit", "cnn"):
            raise ValueError(f"encoder: '{self.encoder}' is not 'vit' or 'cnn'")
        if self.encoder == "cnn" and self.weights != "random":
            raise ValueError(f"encoder: 'cnn' is for a 'random' SAM trained from scratch; pretrained weights "
                             f"({self.weights}) come with their own ViT")
        if self.encoder == "cnn" and self.stem != "patch":
            raise ValueError("stem: 'conv' is a ViT's patch embedding; encoder 'cnn' has no patches to embed")
        if self.cnn_width < 16:
            raise ValueError(f"cnn_width: {self.cnn_width} must be >= 16")
        if self.stem == "conv" and self.weights != "random":
            raise ValueError("stem: 'conv' replaces the patch embedding of a 'random' SAM only; pretrained "
                             f"weights ({self.weights}) keep their own")
        if self.size not in ("vit_b", "vit_l", "vit_h", "tiny"):
            raise ValueError(f"size: '{self.size}' is not one of vit_b, vit_l, vit_h, tiny")
        if self.image_size % 16 or self.image_size < 64:
            raise ValueError(f"image_size: {self.image_size} must be a multiple of 16 and >= 64")


@dataclass
class FusionConfig:
    """Fusion module switches: S_hat = MLP(SelfAttn(CrossAttn(S, K) + S)); each row of Tables 3-4 is a preset."""

    preset: str | None = help_field(
        f"named ablation row ({', '.join(FUSION_PRESETS)}); switches left unset take its values, a switch "
        "set next to it must agree with it. null: unset switches take the keyseg row",
        default=None,
    )
    use_key: bool | None = help_field("put [KEY] in the answer and train the keyword loss (null: from the preset)", default=None)
    cross_attn: bool | None = help_field("CrossAttn(Q=S, K=V=[KEY] embeddings of the same sample)", default=None)
    self_attn: bool | None = help_field("SelfAttn of the refined [SEG] over itself + the output sequence", default=None)
    residual: bool | None = help_field("add S back after the cross-attention (CrossAttn(S, K) + S)", default=None)
    num_heads: int = help_field("attention heads in both attentions (the attention width must divide by it)", default=8)
    space: Literal["prompt", "llm"] = help_field(
        "where the attentions run: 'prompt' projects S, K and the sequence into SAM's prompt width first "
        "(the paper's shared latent space); 'llm' attends in the LLM width and the MLP projects last "
        "(then seg_only is exactly LISA's text_hidden_fcs)",
        default="prompt",
    )

    codebook: int = help_field(
        "0: the paper's output, S_hat = MLP(...). K > 0: MLP(...) attends over K learned prompts and S_hat "
        "is their softmax mixture (for a SAM trained from scratch on K category prompts, which `keyseg "
        "train` copies in from prompt_anchors; the anchor loss is then the attention logits' cross-entropy)",
        default=0,
    )

    def __post_init__(self) -> None:
        resolve_preset("fusion", self)
        if self.codebook < 0:
            raise ValueError(f"codebook: {self.codebook} must be >= 0 (0: the paper's MLP output)")
        if self.cross_attn and not self.use_key:
            raise ValueError("cross_attn needs use_key (no [KEY] to attend to)")
        if self.residual and not self.cross_attn:
            raise ValueError("residual adds S around the cross-attention; it needs cross_attn")
        if self.num_heads < 1:
            raise ValueError(f"num_heads: {self.num_heads} must be >= 1")
        if self.space not in ("prompt", "llm"):
            raise ValueError(f"space: '{self.space}' is not 'prompt' or 'llm'")


@dataclass
class KeywordConfig:
    """Keyword head: L_kw = CE((W_k K) . E^T / tau, y)."""

    tau: float = help_field("softmax temperature tau (the paper gives no value)", default=1.0)
    vocabulary: list[str] | None = help_field(
        "candidate keywords for decoding [KEY]; None = COCO's 80 category names", default=None
    )
    top_k: int = help_field("keyword alternatives returned by the predictor", default=5)

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau: {self.tau} must be > 0")
        if self.top_k < 1:
            raise ValueError(f"top_k: {self.top_k} must be >= 1")


@dataclass
class LossConfig:
    """Weights of L = w_ce L_CE + w_bce L_BCE + w_dice L_DICE + w_kw L_keyword."""

    preset: str | None = help_field(
        f"named weights ({', '.join(LOSS_PRESETS)}); weights left unset take its values, a weight set next to "
        "it must agree with it. null: unset weights take the paper row (all 1)",
        default=None,
    )
    ce: float | None = help_field("language-modelling cross-entropy weight (null: from the preset)", default=None)
    bce: float | None = help_field("mask binary cross-entropy weight", default=None)
    dice: float | None = help_field("mask Dice weight", default=None)
    keyword: float | None = help_field("keyword alignment loss weight", default=None)

    def __post_init__(self) -> None:
        resolve_preset("loss", self)
        for name in ("ce", "bce", "dice", "keyword"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: weight {getattr(self, name)} must be >= 0")


@dataclass
class LoraConfig:
    """LoRA on the language model only (never on the CLIP tower, which also has q_proj/v_proj)."""

    r: int = help_field("LoRA rank", default=8)
    alpha: int = help_field("LoRA alpha", default=16)
    dropout: float = help_field("LoRA dropout", default=0.05)
    target_modules: list[str] = help_field(
        "LLM projection names to adapt", default_factory=lambda: ["q_proj", "v_proj"]
    )

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"r: {self.r} must be >= 1")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: {self.dropout} must be in [0, 1)")
        if not self.target_modules:
            raise ValueError("target_modules: must name at least one module")


@dataclass
class TemplateConfig:
    """Conversation format and the answer that carries [SEG] and [KEY]."""

    prompt: str = help_field(
        "user turn; must contain <image> and {query}", default="USER: <image>\n{query} ASSISTANT:"
    )
    answer: str = help_field(
        "answer with [SEG] (and [KEY] when fusion.use_key); one [SEG] per target",
        default=" Sure, [SEG] is the [KEY].",
    )
    answer_no_key: str = help_field("answer used when fusion.use_key is false", default=" Sure, it is [SEG].")
    reply: str = help_field(
        "the readable answer the predictor returns; {keyword} is the decoded keyword", default="Sure, it is the {keyword}."
    )
    reply_no_key: str = help_field("readable answer when fusion.use_key is false", default="Sure, here it is.")
    turn: str = help_field(
        "a later user turn of a multi-turn conversation (VQA data), after the previous answer and EOS; "
        "must contain {query}", default="USER: {query} ASSISTANT:"
    )
    token_position: Literal["predicting", "at"] = help_field(
        "which hidden state is a token's embedding: 'predicting' = the position whose next-token "
        "prediction is the token (LISA's convention), 'at' = the token's own position",
        default="predicting",
    )
    max_length: int = help_field("context limit in tokens (image tokens included)", default=2048)

    def __post_init__(self) -> None:
        if IMAGE_TOKEN not in self.prompt or "{query}" not in self.prompt:
            raise ValueError("prompt: must contain '<image>' and '{query}'")
        if "{query}" not in self.turn or IMAGE_TOKEN in self.turn:
            raise ValueError("turn: must contain '{query}' and no '<image>'")
        if SEG_TOKEN not in self.answer or SEG_TOKEN not in self.answer_no_key:
            raise ValueError("answer / answer_no_key: must contain [SEG]")
        if self.token_position not in ("predicting", "at"):
            raise ValueError(f"token_position: '{self.token_position}' is not 'predicting' or 'at'")


@dataclass
class TrainableConfig:
    """Base parts that train besides LoRA, the [SEG]/[KEY] rows, fusion, keyword head and mask decoder.

    The paper and LISA keep the pretrained CLIP tower, projector and SAM encoders frozen (all false).
    A model whose tower or SAM has no pretrained weights to start from (KeySeg-Tiny) trains them;
    whatever trains is saved in the checkpoint.
    """

    vision_tower: bool = help_field("train the CLIP vision tower", default=False)
    projector: bool = help_field("train the vision-to-LLM projector", default=False)
    sam_image_encoder: bool = help_field("train SAM's image encoder", default=False)
    sam_prompt_encoder: bool = help_field("train SAM's prompt encoder (its no-mask embedding)", default=False)


@dataclass
class KeySegConfig:
    """Everything needed to rebuild a KeySeg model; saved as config.json in each checkpoint."""

    name: str = help_field("config name (registry key or user label)", default="custom")
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    keyword: KeywordConfig = field(default_factory=KeywordConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    template: TemplateConfig = field(default_factory=TemplateConfig)
    trainable: TrainableConfig = field(default_factory=TrainableConfig)

    def __post_init__(self) -> None:
        if self.fusion.use_key and KEY_TOKEN not in self.template.answer:
            raise ValueError("template.answer: must contain [KEY] when fusion.use_key is true")

    @property
    def answer(self) -> str:
        """The answer template in force for this fusion setting."""
        return self.template.answer if self.fusion.use_key else self.template.answer_no_key

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeySegConfig:
        return build_dataclass(cls, data)

    @classmethod
    def from_file(cls, path: str | Path) -> KeySegConfig:
        """Load a JSON or YAML config (following `base:`, config/files.py); errors name the file and the key."""
        return load_config(cls, path)
