"""`keyseg convert-lisa` on a LISA-keyed checkpoint at tiny sizes: the converted model's mask equals a
hand-built reference of LISA's computation from the raw LISA tensors; KeySeg training starts from it;
bad checkpoints are named."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from test_sam_convert import hf_name, segment_anything_keys
from transformers import (
    AutoTokenizer,
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaModel,
    SamModel,
)

from keyseg_core.cli import app as cli
from keyseg_core.modeling.build import OFFLINE_LLM, build_model
from keyseg_core.modeling.sam import preprocess_sam, sam_config
from keyseg_core.pretrained.offline_llm import resolve_pretrained
from keyseg_core.pretrained.sam_checkpoint import convert_sam_state_dict
from keyseg_core.train.stage2.config import TrainConfig
from keyseg_core.weights.checkpoint import load_checkpoint, load_weights_into
from keyseg_core.weights.convert_lisa import convert_lisa

D, CLIP_SIZE = 64, 56  # LLM width; CLIP side (4 x 4 patches of 14)
CONFIGS = Path(__file__).resolve().parents[2] / "recipes"


def tiny_lisa_state(vocab: int) -> dict[str, torch.Tensor]:
    """LISAForCausalLM's tensors at tiny sizes, under LISA's own key names."""
    torch.manual_seed(5)
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2,
                                         num_attention_heads=4, vocab_size=vocab, tie_word_embeddings=False))
    state = dict(llama.state_dict())  # model.embed_tokens, model.layers.*, model.norm, lm_head
    state["model.mm_projector.weight"] = torch.randn(D, 32) * 0.05
    state["model.mm_projector.bias"] = torch.randn(D) * 0.05
    sam = SamModel(sam_config("tiny", 128)).state_dict()
    for key in segment_anything_keys(depth=2, decoder_layers=2):
        state[f"model.visual_model.{key}"] = sam[hf_name(key)].clone()
    for name, shape in (("0.0.weight", (D, D)), ("0.0.bias", (D,)), ("0.2.weight", (64, D)), ("0.2.bias", (64,))):
        state[f"model.text_hidden_fcs.{name}"] = torch.randn(shape) * 0.1
    return state


def write_lisa(folder, state, tokenizer, clip_dir, as_bin=True):
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder)
    config = {"model_type": "llava", "architectures": ["LISAForCausalLM"], "hidden_size": D,
              "intermediate_size": 2 * D, "num_attention_heads": 4, "num_hidden_layers": 2, "rms_norm_eps": 1e-6,
              "mm_vision_select_layer": -2, "mm_use_im_start_end": True, "vision_tower": str(clip_dir),
              "mm_hidden_size": 32, "out_dim": 64, "train_mask_decoder": True}
    (folder / "config.json").write_text(json.dumps(config))
    if as_bin:
        torch.save(state, folder / "pytorch_model.bin")
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def lisa(tmp_path_factory):
    root = tmp_path_factory.mktemp("lisa")
    tokenizer = AutoTokenizer.from_pretrained(resolve_pretrained(OFFLINE_LLM))
    tokenizer.add_tokens("[SEG]")  # as LISA adds it
    tokenizer.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    torch.manual_seed(6)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                     image_size=CLIP_SIZE, patch_size=14)).save_pretrained(root / "clip")
    state = tiny_lisa_state(len(tokenizer))
    folder = write_lisa(root / "LISA-tiny", state, tokenizer, root / "clip")
    out, layout = convert_lisa(folder, root / "converted", dtype=torch.float32)
    return root, state, tokenizer, out, layout


def lisa_reference(state, root, tokenizer, image, input_ids) -> torch.Tensor:
    """LISA's forward, written from LISA's model code, on the raw LISA tensors."""
    # CLIP: CLIP's own preprocessing; hidden_states[-2] without CLS (select_layer -2, 'patch')
    clip = CLIPVisionModel.from_pretrained(root / "clip").eval()
    processor = CLIPImageProcessor(size={"shortest_edge": CLIP_SIZE}, crop_size={"height": CLIP_SIZE, "width": CLIP_SIZE})
    pixels = torch.from_numpy(np.asarray(processor.preprocess(image, return_tensors="np")["pixel_values"]))
    feats = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    feats = F.linear(feats, state["model.mm_projector.weight"], state["model.mm_projector.bias"])  # (1, 16, D)
    # LLaMA: image features spliced in for the image token (LISA's IMAGE_TOKEN_INDEX)
    llama = LlamaModel(LlamaConfig(hidden_size=D, intermediate_size=2 * D, num_hidden_layers=2, num_attention_heads=4,
                                   rms_norm_eps=1e-6, vocab_size=state["model.embed_tokens.weight"].shape[0])).eval()
    llama.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")
                           and not k.startswith(("model.mm_projector", "model.visual_model", "model.text_hidden"))})
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    ids = input_ids.tolist()
    first = ids.index(image_id)
    embeds = llama.embed_tokens(torch.where(input_ids == image_id, 0, input_ids)[None])  # LISA: a -200 placeholder
    embeds[0, first:first + feats.shape[1]] = feats[0]
    hidden = llama(inputs_embeds=embeds).last_hidden_state[0]  # output_hidden_states[-1]
    # [SEG]: the hidden state at the position predicting it (input_ids[:, 1:] == seg_token_idx)
    seg_at = [i for i in range(len(ids) - 1) if ids[i + 1] == tokenizer.convert_tokens_to_ids("[SEG]")]
    x = F.relu(F.linear(hidden[seg_at], state["model.text_hidden_fcs.0.0.weight"], state["model.text_hidden_fcs.0.0.bias"]))
    text_embeds = F.linear(x, state["model.text_hidden_fcs.0.2.weight"], state["model.text_hidden_fcs.0.2.bias"])
    # SAM: image encoder, prompt encoder with text_embeds as the sparse prompt, single-mask decoder
    sam = SamModel(sam_config("tiny", 128)).eval()
    sam.load_state_dict(convert_sam_state_dict({k[len("model.visual_model."):]: v for k, v in state.items()
                                                if k.startswith("model.visual_model.")}))
    prepared = preprocess_sam(image, 128)
    embedding = sam.get_image_embeddings(prepared.pixels[None])
    n = text_embeds.shape[0]
    dense = sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, *embedding.shape[-2:])
    low, _ = sam.mask_decoder(image_embeddings=embedding, image_positional_embeddings=sam.get_image_wide_positional_embeddings(),
                              sparse_prompt_embeddings=text_embeds[None, :, None, :], dense_prompt_embeddings=dense,
                              multimask_output=False)[:2]
    masks = F.interpolate(low.reshape(n, 1, *low.shape[-2:]), (128, 128), mode="bilinear", align_corners=False)
    masks = masks[..., : prepared.resized_hw[0], : prepared.resized_hw[1]]
    return F.interpolate(masks, prepared.original_hw, mode="bilinear", align_corners=False)[:, 0]


@torch.no_grad()
def test_converted_model_computes_lisas_mask(lisa):
    root, state, tokenizer, out, layout = lisa
    assert layout.startswith("LISA layout") and (out / "bases" / "llava").is_dir()
    model, processor = load_checkpoint(out)  # fingerprint checked against the written bases
    model.eval()
    config = model.config
    assert (config.fusion.preset, config.fusion.space, config.backbone.image_preprocess) == ("seg_only", "llm", "crop")
    image = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    batch = processor([image], ["what is the red thing?"])
    assert "<im_start>" in processor.tokenizer.decode(batch.input_ids[0]) and batch.input_ids.shape[0] == 1
    got = model.run(batch).mask_logits[0]
    want = lisa_reference(state, root, processor.tokenizer, image, batch.input_ids[0])
    assert got.shape == want.shape == (1, 90, 120)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert (want > 0).any() and (want <= 0).any()  # a mask with both sides, so the comparison has teeth
    from keyseg_core.runtime.predictor import Predictor

    predictor = Predictor.from_pretrained(str(out))  # what `keyseg predict --model <converted>` runs
    assert not predictor.untrained  # LISA trained it
    assert np.array_equal(predictor.predict(image, "what is the red thing?").mask, (want[0] > 0).numpy())


def test_keyseg_training_starts_from_converted_lisa(lisa):
    _, state, _, out, _ = lisa
    shipped = CONFIGS / "keyseg_from_lisa.yaml"  # the shipped recipe, pointed at the tiny conversion
    config = TrainConfig.from_file(shipped, [f"model={out}", f"init_checkpoint={out}"])
    model_config = config.model_config()
    assert model_config.fusion.use_key and model_config.fusion.space == "llm" and model_config.loss.bce == 2.0
    model, _ = build_model(model_config)
    fresh = load_weights_into(model, out, partial=True)["fresh"]  # frozen bases match: same fingerprint
    assert fresh and {n.split(".")[1] for n in fresh} == {"cross_attn", "self_attn"}
    assert torch.equal(model.fusion.mlp[2].weight, state["model.text_hidden_fcs.0.2.weight"])


def run_cli(*args):
    return cli.main(["convert-lisa", *map(str, args)])


def test_bad_checkpoints_are_named(lisa, tmp_path, capsys):
    root, state, tokenizer, _, _ = lisa
    clip = root / "clip"
    cases = {
        "unknown": ({k: v for k, v in state.items() if "text_hidden_fcs" not in k}, tokenizer, "model.text_hidden_fcs"),
        "peft": ({f"base_model.model.{k}": v for k, v in state.items()}, tokenizer, "unmerged"),
        "shape": (state | {"model.text_hidden_fcs.0.2.weight": torch.zeros(32, D)}, tokenizer,
                  "model.text_hidden_fcs: 2.weight has shape (32, 64)"),
    }
    for name, (bad_state, tok, message) in cases.items():
        folder = write_lisa(tmp_path / name, bad_state, tok, clip, as_bin=False)
        assert run_cli("--checkpoint", folder, "--out", tmp_path / f"{name}_out", "--dtype", "float32") == 2, name
        assert message in capsys.readouterr().err, name
    no_seg = AutoTokenizer.from_pretrained(resolve_pretrained(OFFLINE_LLM))
    folder = write_lisa(tmp_path / "no_seg", state, no_seg, clip, as_bin=False)
    assert run_cli("--checkpoint", folder, "--out", tmp_path / "x") == 2
    assert "no [SEG] token" in capsys.readouterr().err
    short = {**state, "model.embed_tokens.weight": state["model.embed_tokens.weight"][:-3],
             "lm_head.weight": state["lm_head.weight"][:-3]}
    folder = write_lisa(tmp_path / "short", short, tokenizer, clip, as_bin=False)
    assert run_cli("--checkpoint", folder, "--out", tmp_path / "y") == 2
    assert "lacks the trained [SEG] row" in capsys.readouterr().err


class Payload:
    """Not a tensor: a pickle holding it would run code on load."""


def test_pickled_code_is_refused(lisa, tmp_path, capsys):
    root, state, tokenizer, _, _ = lisa
    folder = write_lisa(tmp_path / "evil", {"x": Payload()}, tokenizer, root / "clip")
    assert run_cli("--checkpoint", folder, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "pytorch_model.bin: refused: not a weights-only state dict" in err
