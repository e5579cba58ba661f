"""Batches that mix segmentation samples with VQA conversations (no mask, no [SEG]): labels on every
answer, SAM and the mask losses only for samples with a [SEG], CE over all answers; CLIP 'crop' input."""

import numpy as np
import pytest
import torch

from keyseg_core.config.labels import IGNORE_TOKEN
from keyseg_core.modeling.processor import preprocess_clip_crop

VQA_TURNS = [("What colour is the box?", "It is yellow."), ("Is it big?", "No, it is small.")]


def mixed_batch(processor, img, mask):
    """Sample 0: a segmentation sample with a keyword; sample 1: a two-turn VQA conversation."""
    (q0, a0), later = VQA_TURNS[0], VQA_TURNS[1:]
    return processor(
        [img, img[:60]], ["which object is yellow?", q0],
        answers=[processor.config.answer, " " + a0], keywords=[["banana"], []],
        masks=[mask, None], follow_ups=[[], later],
    )


def test_labels_cover_every_answer_and_eos(tiny, square_sample):
    _, processor = tiny
    batch = mixed_batch(processor, *square_sample)
    tok, eos = processor.tokenizer, processor.ids.eos
    labelled = batch.labels[1][batch.labels[1] != IGNORE_TOKEN].tolist()
    expected = (processor.answer_ids(" It is yellow.") + [eos] + processor.answer_ids(" No, it is small.") + [eos])
    assert labelled == expected, tok.decode(labelled)
    turn = processor.answer_ids(processor.config.template.turn.format(query="Is it big?"))
    ids = batch.input_ids[1].tolist()
    assert any(ids[i:i + len(turn)] == turn for i in range(len(ids)))  # the second question, unlabelled
    assert batch.gt_masks[1].shape == (0, 60, 128) and batch.gt_masks[0].shape == (1, 96, 128)
    assert batch.keyword_ids == [[processor.keyword_ids("banana")], []]


def test_bad_maskless_samples(tiny, square_sample):
    _, processor = tiny
    img, _ = square_sample
    with pytest.raises(ValueError, match="sample 0: 1 \\[SEG\\] token.*no mask"):
        processor([img], ["q"], answers=[" Sure, [SEG]."], keywords=[[]], masks=[None])
    with pytest.raises(ValueError, match="sample 0: '<image>' may appear only in the first prompt"):
        processor([img], ["q"], answers=[" see <image>"], keywords=[[]], masks=[None])
    limit = processor.config.template.max_length
    long = " word" * (limit + 50)
    batch = processor([img], ["q"], answers=[long], keywords=[[]], masks=[None])
    assert batch.input_ids.shape[1] == limit  # a conversation without [SEG] is cut, as LISA cuts it
    with pytest.raises(ValueError, match="exceed the context"):
        processor([img], ["q"], answers=[" Sure, [SEG]." + long], keywords=[[]], masks=[np.zeros((96, 128), np.uint8)])


def test_sam_and_mask_losses_only_for_samples_with_seg(tiny, square_sample, monkeypatch):
    model, processor = tiny
    img, mask = square_sample
    encoded = []
    encode = model.sam.encode
    monkeypatch.setattr(model.sam, "encode", lambda pixels: encoded.append(pixels.shape[0]) or encode(pixels))
    torch.manual_seed(0)
    model.eval()  # no dropout: the same sample gives the same masks alone and in the mixed batch
    alone = model(processor([img], ["which object is yellow?"], keywords=[["banana"]], masks=[mask]))
    mixed = model(mixed_batch(processor, img, mask))
    assert encoded == [1, 1]  # the VQA image never reaches SAM
    assert [m.shape for m in mixed.mask_logits] == [(1, 96, 128), (0, 60, 128)]
    for key in ("bce", "dice", "keyword"):
        assert mixed.losses[key] == pytest.approx(alone.losses[key].item(), abs=1e-5), key
    assert mixed.losses["ce"] != pytest.approx(alone.losses["ce"].item())  # the VQA answers count in CE
    model.train()


def test_vqa_only_batch_trains_the_llm_only(tiny, square_sample):
    model, processor = tiny
    img, _ = square_sample
    model.zero_grad()
    out = model(processor([img], ["What is it?"], answers=[" A box."], keywords=[[]], masks=[None]))
    assert out.losses["bce"] == 0 and out.losses["dice"] == 0 and out.losses["keyword"] == 0
    assert out.losses["ce"] > 0 and out.loss.item() == pytest.approx(out.losses["ce"].item())
    out.loss.backward()
    lora_b = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(g is not None and g.abs().sum() > 0 for g in lora_b)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.sam.sam.mask_decoder.parameters())
    model.zero_grad()


def test_clip_crop_is_clips_own_preprocessing():
    from transformers import CLIPImageProcessor

    reference = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    for shape in [(480, 640, 3), (641, 480, 3), (100, 700, 3)]:
        img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
        want = torch.from_numpy(np.asarray(reference.preprocess(img, return_tensors="np")["pixel_values"][0]))
        assert torch.equal(preprocess_clip_crop(img, 224), want)
