"""Convert a released LISA checkpoint into a keyseg checkpoint that computes LISA's masks.

LISA-7B-v1 and LISA-13B-llama2-v1 are merged Hugging Face folders of LISAForCausalLM: a LLaVA-v1
LLaMA (`model.embed_tokens`, `model.layers.*`, `model.norm`, `lm_head`, with LISA's trained [SEG]
row), one linear projector `model.mm_projector` (CLIP-L/14 features -> LLM width), SAM ViT-H under
`model.visual_model.*` (segment-anything names, fine-tuned mask decoder) and the [SEG] projection
`model.text_hidden_fcs.0` (Linear(d, d) -> ReLU -> Linear(d, 256)). The CLIP tower is not in them
(LISA freezes it; it comes from `--vision-tower`, openai/clip-vit-large-patch14).

The output folder is a keyseg checkpoint of the `seg_only` preset in the LLM space (fusion.mlp =
text_hidden_fcs: LISA's computation), LISA's conversation template and CLIP preprocessing, with
its bases beside it: `bases/llava` (a LlavaForConditionalGeneration: the LLaMA, LISA's projector as
linear_1 followed by an identity, the CLIP tower, the tokenizer) and `bases/sam.safetensors`.
Config paths are relative to the folder, so it can be moved. `init_checkpoint` starts KeySeg
training from it ([KEY] row, fusion attentions and keyword head start fresh).

Weights are read from safetensors, or from pickled `.bin` files with `torch.load(weights_only=True)`,
which refuses anything but tensors.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from keyseg_core.config.model import (
    BackboneConfig,
    FusionConfig,
    KeySegConfig,
    LossConfig,
    SamConfig,
    TemplateConfig,
)
from keyseg_core.modeling.sam import SAM_SIZES, spec_config
from keyseg_core.pretrained.sam_checkpoint import convert_sam_state_dict

SEG = "[SEG]"
# LLaVA-v1's conversation (LISA's conv_type llava_v1) with LISA's image tokens around <image>
SYSTEM = ("A chat between a curious human and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the human's questions.")
PROMPT = SYSTEM + " USER: <im_start><image><im_end>\n{query} ASSISTANT:"
PROMPT_NO_START_END = SYSTEM + " USER: <image>\n{query} ASSISTANT:"
ANSWER = " [SEG]."  # LISA's evaluation answer (ValDataset), teacher-forced
KNOWN = {(4096, 32): "LISA-7B-v1", (5120, 40): "LISA-13B-llama2"}
LLAMA_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
              "num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "rope_theta", "rope_scaling",
              "hidden_act", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id", "attention_bias")
SKIPPED = re.compile(r"(^model\.vision_tower\.|rotary_emb\.inv_freq$)")  # LISA's frozen CLIP; old buffers
TEXT_FCS = {"model.text_hidden_fcs.0.0.weight": "fusion.mlp.0.weight", "model.text_hidden_fcs.0.0.bias": "fusion.mlp.0.bias",
            "model.text_hidden_fcs.0.2.weight": "fusion.mlp.2.weight", "model.text_hidden_fcs.0.2.bias": "fusion.mlp.2.bias"}


def read_state(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a Hugging Face folder: safetensors (sharded or not) or weights-only .bin files."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors or pytorch_model*.bin weight files")
    state: dict[str, torch.Tensor] = {}
    for path in files:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                part = {k: f.get_tensor(k) for k in f.keys()}
        else:
            try:
                part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - unpickling errors vary; one clear refusal
                raise ValueError(f"{path}: refused: not a weights-only state dict ({exc})") from exc
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise ValueError(f"{path}: expected a state dict of tensors")
        state.update(part)
    return state


def detect_layout(state: dict[str, torch.Tensor], folder: Path) -> None:
    """Refuse anything that is not a merged LISA checkpoint, naming what is missing or foreign."""
    if any(k.startswith("base_model.model.") for k in state) or any(".lora_A." in k for k in state):
        raise ValueError(f"{folder}: an unmerged LISA training checkpoint (peft/LoRA keys); merge it first with "
                         "LISA's merge_lora_weights_and_save_hf_model.py, then convert the merged folder")
    required = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight", "model.mm_projector.weight",
                "model.visual_model.image_encoder.pos_embed", *TEXT_FCS]
    missing = [k for k in required if k not in state]
    if missing:
        raise ValueError(f"{folder}: unknown layout, not a merged LISA checkpoint (LISA-7B-v1 / LISA-13B-llama2): "
                         f"missing {missing}")
    known = re.compile(r"^(model\.(embed_tokens|norm|layers\.\d+|mm_projector|visual_model|text_hidden_fcs)\.|lm_head\.)")
    foreign = sorted(k for k in state if not known.match(k) and not SKIPPED.search(k))
    if foreign:
        raise ValueError(f"{folder}: unknown layout: keys outside LISA's layout: {foreign[:5]}")


def llama_config(folder: Path, state: dict[str, torch.Tensor]):
    """LLaMA settings from LISA's config.json (model_type 'llava' there: read as plain JSON)."""
    from transformers import LlamaConfig

    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (LISA's config.json names the LLaMA size and the vision tower)")
    raw = json.loads(path.read_text())
    fields = {k: raw[k] for k in LLAMA_KEYS if k in raw}
    return raw, LlamaConfig(**fields, vocab_size=state["model.embed_tokens.weight"].shape[0], tie_word_embeddings=False)


def load_tokenizer_with_seg(folder: Path, rows: int):
    """LISA's tokenizer plus keyseg's tokens; [SEG] must exist and have a row in LISA's tables."""
    from transformers import AutoTokenizer

    from keyseg_core.modeling.processor import add_special_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    seg = tokenizer.get_vocab().get(SEG)
    if seg is None:
        raise ValueError(f"{folder}: the tokenizer has no {SEG} token; not a LISA checkpoint")
    if seg >= rows or len(tokenizer) > rows:
        raise ValueError(f"{folder}: model.embed_tokens.weight has {rows} rows but the tokenizer has {len(tokenizer)} "
                         f"tokens ({SEG} = {seg}): the checkpoint lacks the trained {SEG} row")
    add_special_tokens(tokenizer)
    return tokenizer


def llava_state(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """LISA's LLaMA and projector under LlavaForConditionalGeneration's names (projector: linear_1 = LISA's,
    linear_2 = identity after a 'linear' activation, which is LISA's single Linear exactly)."""
    out = {}
    for key, tensor in state.items():
        if SKIPPED.search(key) or key.startswith(("model.visual_model.", "model.text_hidden_fcs.")):
            continue
        if key.startswith("model.mm_projector."):
            out[key.replace("model.mm_projector.", "model.multi_modal_projector.linear_1.")] = tensor.to(dtype)
        elif key.startswith("model."):
            out["model.language_model." + key[len("model."):]] = tensor.to(dtype)
        else:
            out[key] = tensor.to(dtype)
    width = state["model.mm_projector.weight"].shape[0]
    out["model.multi_modal_projector.linear_2.weight"] = torch.eye(width, dtype=dtype)
    out["model.multi_modal_projector.linear_2.bias"] = torch.zeros(width, dtype=dtype)
    return out


def write_llava(state: dict[str, torch.Tensor], raw: dict, text_config, tokenizer, vision_tower: str,
                dtype: torch.dtype, out: Path) -> None:
    """Assemble the LLaVA on the meta device, assign the tensors (strict: every key and shape), save."""
    from transformers import CLIPVisionModel, LlavaConfig, LlavaForConditionalGeneration

    from keyseg_core.pretrained.offline_llm import resolve_pretrained

    vision = CLIPVisionModel.from_pretrained(resolve_pretrained(vision_tower), dtype=dtype)
    config = LlavaConfig(
        vision_config=vision.config, text_config=text_config, projector_hidden_act="linear",
        vision_feature_layer=int(raw.get("mm_vision_select_layer", -2)), vision_feature_select_strategy="default",
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), tie_word_embeddings=False,
    )
    with torch.device("meta"):
        llava = LlavaForConditionalGeneration(config)
    tensors = llava_state(state, dtype) | {f"model.vision_tower.{k}": v for k, v in vision.state_dict().items()}
    _check_shapes(llava.state_dict(), tensors, "LLaVA")
    llava.load_state_dict(tensors, strict=True, assign=True)
    llava.save_pretrained(out)
    tokenizer.save_pretrained(out)


def sam_spec(state: dict[str, torch.Tensor]) -> SamConfig:
    """The named SAM size whose every parameter shape matches (LISA: vit_h); else an error naming a key."""
    from transformers import SamModel

    grid, patch = state["vision_encoder.pos_embed"].shape[1], state["vision_encoder.patch_embed.projection.weight"].shape[-1]
    image_size = grid * patch
    first_error = None
    for size in ("vit_h", "vit_l", "vit_b", "tiny"):
        spec = SamConfig(weights="random", size=size, image_size=image_size)
        with torch.device("meta"):
            expected = SamModel(spec_config(spec)).state_dict()
        try:
            _check_shapes(expected, state, "SAM")
            return spec
        except ValueError as exc:
            first_error = first_error or exc
    raise ValueError(f"model.visual_model: matches no SAM size of {', '.join(SAM_SIZES)}: {first_error}")


def _check_shapes(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor], what: str) -> None:
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{what}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for key, tensor in given.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(f"{what}: {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}")


def keyseg_config(layout: str, raw: dict, sam: SamConfig, hidden: int) -> KeySegConfig:
    """seg_only in the LLM space (LISA's computation), LISA's template, CLIP crop, LISA's loss weights."""
    start_end = bool(raw.get("mm_use_im_start_end", True))
    return KeySegConfig(
        name=f"lisa:{layout}",
        backbone=BackboneConfig(mllm="./bases/llava", image_preprocess="crop",
                                vision_feature_layer=int(raw.get("mm_vision_select_layer", -2))),
        sam=SamConfig(weights="./bases/sam.safetensors", size=sam.size, image_size=sam.image_size),
        # heads only matter once a KeySeg preset adds attentions in the LLM space: 128 wide, LLaMA's width
        fusion=FusionConfig(preset="seg_only", space="llm", num_heads=max(1, hidden // 128)),
        loss=LossConfig(preset="lisa"),
        template=TemplateConfig(prompt=PROMPT if start_end else PROMPT_NO_START_END, answer_no_key=ANSWER),
    )


def convert_lisa(source: str | Path, out: str | Path, vision_tower: str | None = None,
                 dtype: torch.dtype = torch.bfloat16, overwrite: bool = False) -> tuple[Path, str]:
    """Write the keyseg checkpoint folder `out` from LISA folder `source`; returns (out, layout name)."""
    from keyseg_core.modeling.build import build_model

    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: not a folder (a LISA checkpoint is a Hugging Face folder)")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    state = read_state(source)
    detect_layout(state, source)
    raw, text_config = llama_config(source, state)
    layout = KNOWN.get((text_config.hidden_size, text_config.num_hidden_layers),
                       f"LISA layout, hidden {text_config.hidden_size}, {text_config.num_hidden_layers} layers")
    vision_tower = vision_tower or raw.get("vision_tower") or raw.get("mm_vision_tower") or "openai/clip-vit-large-patch14"
    tokenizer = load_tokenizer_with_seg(source, state["model.embed_tokens.weight"].shape[0])
    sam_state = convert_sam_state_dict({k[len("model.visual_model."):]: v for k, v in state.items()
                                        if k.startswith("model.visual_model.")})
    sam = sam_spec(sam_state)
    with staged_folder(out) as stage:
        write_llava(state, raw, text_config, tokenizer, vision_tower, dtype, stage / "bases" / "llava")
        save_file({k: v.contiguous().clone() for k, v in sam_state.items()}, str(stage / "bases" / "sam.safetensors"),
                  metadata={"source": f"{source.name}: model.visual_model"})
        config = keyseg_config(layout, raw, sam, text_config.hidden_size)
        model, _ = build_model(resolved(config, stage), dtype=dtype)
        fcs = model.fusion.mlp.state_dict()
        given = {TEXT_FCS[k][len("fusion.mlp."):]: state[k] for k in TEXT_FCS}
        _check_shapes(fcs, given, "model.text_hidden_fcs")
        model.fusion.mlp.load_state_dict({k: v.to(dtype) for k, v in given.items()})
        model.config = config  # the saved config names the bases relative to the folder
        # train_steps marks the weights as trained (by LISA, not by keyseg), so predict/eval do not warn
        save_beside_bases(model, stage, extra={"converted_from": str(source), "layout": layout,
                                               "vision_tower": vision_tower, "train_steps": "LISA"})
    return out, layout


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` that becomes `out` (replacing it) only if the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield stage
        if out.exists():
            shutil.rmtree(out)
        stage.rename(out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def save_beside_bases(model, stage: Path, extra: dict) -> None:
    """The keyseg checkpoint files (config, trainable weights, meta) at the top of a folder holding `bases/`."""
    from keyseg_core.weights.checkpoint import save_checkpoint

    save_checkpoint(model, stage / "model", extra=extra)
    for item in (stage / "model").iterdir():
        item.rename(stage / item.name)
    (stage / "model").rmdir()


def resolved(config: KeySegConfig, folder: Path) -> KeySegConfig:
    """A copy of `config` whose './' paths point into `folder`."""
    from keyseg_core.weights.checkpoint import resolve_relative

    return resolve_relative(KeySegConfig.from_dict(config.to_dict()), folder)
