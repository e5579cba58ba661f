"""Shapes, gradient flow, trainable set, save/load, and a tiny model overfitting one sample."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from keyseg_core.modeling.build import build_model, registry_config
from keyseg_core.weights.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint

TRAINABLE = re.compile(
    r"(lora_[AB]\.|trainable_tokens_delta|^fusion\.|^keyword_head\.|^sam\.sam\.mask_decoder\.)"
)
# Parts of SAM's decoder that single-mask output (LISA's setting) never uses, and LoRA's A matrices,
# whose gradient is zero while B is still at its zero initialisation.
UNUSED = re.compile(r"(output_hypernetworks_mlps\.[123]\.|iou_prediction_head\.|lora_A\.)")


def batch_for(processor, img, mask, keyword="banana"):
    return processor([img], ["which object is yellow?"], keywords=[[keyword]], masks=[mask])


def test_only_intended_parameters_train(tiny):
    model, _ = tiny
    for name, p in model.named_parameters():
        assert p.requires_grad == bool(TRAINABLE.search(name)), name
    rows = {part: (t, n) for part, t, n in model.parameter_summary()}
    assert rows["vision_tower"][0] == 0 and rows["sam_image_encoder"][0] == 0 and rows["projector"][0] == 0
    assert rows["fusion"][0] == rows["fusion"][1] > 0 and rows["sam_mask_decoder"][0] == rows["sam_mask_decoder"][1]
    assert 0 < rows["language_model"][0] < rows["language_model"][1]
    # new token rows only: 2 rows ([SEG], [KEY]) of the 64-wide embedding
    assert rows["language_model"][0] - sum(
        p.numel() for n, p in model.named_parameters() if "lora_" in n
    ) == 2 * 64


def test_forward_shapes_and_gradient_flow(tiny, square_sample):
    model, processor = tiny
    img, mask = square_sample
    model.zero_grad()
    out = model(batch_for(processor, img, mask))
    assert out.mask_logits[0].shape == (1, 96, 128)
    assert out.keyword_logits.shape == (1, len(processor.tokenizer))
    assert set(out.losses) == {"ce", "bce", "dice", "keyword"}
    out.loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad and not UNUSED.search(name):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    model.zero_grad()


def test_multiple_seg_and_key_per_sample_and_batch(tiny, square_sample):
    model, processor = tiny
    img, mask = square_sample
    two = np.stack([mask, 1 - mask])
    answer = " Sure, [SEG] is the [KEY] and [SEG] is the [KEY]."
    batch = processor([img, img[:50]], ["two things", "one thing"], answers=[answer, model.config.answer],
                      keywords=[["banana", "table"], ["cup"]], masks=[two, mask[:50]])
    out = model(batch)
    assert [m.shape for m in out.mask_logits] == [(2, 96, 128), (1, 50, 128)]
    assert out.seg_batch.tolist() == [0, 0, 1] and out.key_batch.tolist() == [0, 0, 1]
    assert torch.isfinite(out.loss)


def test_overfits_one_sample(square_sample):
    torch.manual_seed(0)
    model, processor = build_model(registry_config("tiny"))
    img, mask = square_sample
    batch = batch_for(processor, img, mask)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    gt = torch.from_numpy(mask).bool()
    best = 0.0
    for _ in range(150):
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        pred = out.mask_logits[0][0] > 0
        best = max(best, ((pred & gt).sum() / (pred | gt).sum()).item())
        if best > 0.9:
            break
    assert best > 0.9


def test_save_load_round_trip_is_bit_exact(tmp_path, tiny, square_sample):
    model, processor = tiny
    with torch.no_grad():  # make the trainable weights differ from a fresh build
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    save_checkpoint(model, tmp_path / "ckpt", extra={"train_steps": 3})
    loaded, processor2 = load_checkpoint(tmp_path / "ckpt")
    img, _ = square_sample
    model.eval(), loaded.eval()
    with torch.no_grad():
        a = model.run(processor([img], ["the yellow thing"]))
        b = loaded.run(processor2([img], ["the yellow thing"]))
    assert torch.equal(a.mask_logits[0], b.mask_logits[0])
    assert torch.equal(a.keyword_logits, b.keyword_logits)
    assert json.loads((tmp_path / "ckpt" / "meta.json").read_text())["train_steps"] == 3
    model.train()


def test_save_refuses_to_overwrite(tmp_path, tiny):
    model, _ = tiny
    save_checkpoint(model, tmp_path / "ckpt")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_checkpoint(model, tmp_path / "ckpt")
    save_checkpoint(model, tmp_path / "ckpt", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temp dirs left behind


@pytest.mark.parametrize("change", ["missing", "unexpected", "shape"])
def test_load_rejects_mismatched_keys(tmp_path, tiny, change):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "ckpt")
    state = load_file(str(path / WEIGHTS_FILE))
    name = next(iter(state))
    if change == "missing":
        del state[name]
    elif change == "unexpected":
        state["fusion.extra.weight"] = torch.zeros(1)
    else:
        state[name] = torch.zeros(3, 3, 3)
    save_file(state, str(path / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=change if change != "shape" else "shape"):
        load_checkpoint(path)


def test_load_rejects_unknown_config_key(tmp_path, tiny):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    cfg["fusion"]["gate"] = True
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json.*fusion.gate"):
        load_checkpoint(path)


def test_load_rejects_changed_frozen_bases(tmp_path, tiny):
    model, _ = tiny
    path = save_checkpoint(model, tmp_path / "ckpt")
    cfg = json.loads((path / "config.json").read_text())
    cfg["backbone"]["seed"] = 7  # different random bases
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="frozen base weights differ"):
        load_checkpoint(path)


def test_decode_masks_is_one_batched_call_with_the_per_image_result(tiny):
    """Stage 2 decodes every [SEG] of a batch in one mask-decoder call: the same masks as image by image."""
    model, _ = tiny
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        embeddings = model.sam.encode(torch.randn(2, 3, model.sam.image_size, model.sam.image_size, generator=gen))
        prompts = torch.randn(3, model.sam.prompt_dim, generator=gen)
        seg_batch = torch.tensor([0, 0, 2])  # sample 1 has no [SEG]
        masks, ious = model.decode_masks(embeddings, prompts, seg_batch, [0, 2], 3)
        assert [m.shape[0] for m in masks] == [2, 0, 1] and [i.shape[0] for i in ious] == [2, 0, 1]
        for row, i in enumerate([0, 2]):
            want_m, want_i = model.sam.decode(embeddings[row:row + 1], prompts[seg_batch == i])
            torch.testing.assert_close(masks[i], want_m, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(ious[i], want_i, atol=1e-5, rtol=1e-5)
