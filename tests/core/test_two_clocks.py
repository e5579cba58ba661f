"""Reasoner + Segmenter: the predictor composed of the two gives today's results; set_image caching,
batched queries on one frame, generate mode without a second pass, bfloat16 on the CPU."""

import numpy as np
import pytest
import torch
from skimage import data

from keyseg_core.modeling.keyword_head import decode_keywords
from keyseg_core.runtime.predictor import Predictor, resolve_dtype

QUERIES = ["Which object holds the drink?", "the cup", "what is on the left side of the table"]


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("config:tiny", refine="none")  # the model's own masks, compared exactly


def _today(predictor, image, query):
    """What Predictor.predict computed before the split: model.run on the processor's batch."""
    with torch.inference_mode():
        batch = predictor.processor([image], [query]).to(predictor.device, predictor.dtype)
        out = predictor.model.run(batch)
    first = out.mask_logits[0][0].float()
    fg = first > predictor.mask_threshold
    top = decode_keywords(out.keyword_logits[0], predictor.keyword_candidates, predictor.reasoner._candidate_ids,
                          predictor.model.config.keyword.top_k)
    return fg.numpy(), float(torch.sigmoid(first[fg]).mean()) if bool(fg.any()) else 0.0, top


def test_predict_is_identical_to_the_unsplit_forward(predictor):
    for image, query in [(data.coffee(), QUERIES[0]), (data.chelsea(), "the cat")]:
        mask, score, top = _today(predictor, image, query)
        pred = predictor.predict(image, query)
        assert np.array_equal(pred.mask, mask) and pred.score == score
        assert [(c.text, c.prob) for c in pred.keyword_topk] == [(c.text, c.prob) for c in top]
        assert pred.fresh_reasoning and pred.reasoning_age_s == 0.0


def test_reason_then_segment_gives_the_predicted_mask(predictor):
    image = data.coffee()
    reasoning = predictor.reason(image, QUERIES[0])
    assert reasoning.prompts.shape == (1, predictor.model.sam.prompt_dim) and reasoning.frame_hw == (400, 600)
    assert {"vision_tower", "llm_prefill", "fusion", "total"} <= set(reasoning.timings_ms)
    prediction, low_res = predictor.segment(image, reasoning)
    reference = predictor.predict(image, QUERIES[0])
    assert (prediction.mask == reference.mask).mean() > 0.999 and prediction.keyword == reference.keyword
    assert prediction.timings_ms["llm_prefill"] == 0.0 and prediction.timings_ms["sam_encoder"] > 0
    side = predictor.model.sam.image_size // 4
    assert low_res.shape == (1, side, side)
    prompted, _ = predictor.segment(image, reasoning, mask_prompt=low_res)  # previous mask as dense prompt
    assert prompted.mask.shape == image.shape[:2]


def test_set_image_and_batched_queries_match_single_calls(predictor, monkeypatch):
    image = data.coffee()
    singles = [predictor.predict(image, q) for q in QUERIES]
    calls = {"vision": 0, "sam": 0}
    encode_images, encode = predictor.model.encode_images, predictor.model.sam.encode

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(predictor.model, "encode_images", count("vision", encode_images))
    monkeypatch.setattr(predictor.model.sam, "encode", count("sam", encode))
    passes = predictor.reasoner.passes
    predictor.set_image(image)
    batched = predictor.predict_queries(QUERIES)
    assert predictor.reasoner.passes - passes == 2  # the frame's prefix once, the three queries as one batch
    for got, want in zip(batched, singles):
        assert (got.mask == want.mask).mean() > 0.999
        assert got.keyword == want.keyword and got.score == pytest.approx(want.score, abs=1e-4)
    again = predictor.predict_queries([QUERIES[1]])  # a second query on the cached frame
    assert calls == {"vision": 1, "sam": 1}
    assert again[0].timings_ms["vision_tower"] == 0.0 and again[0].timings_ms["sam_encoder"] == 0.0
    assert (again[0].mask == singles[1].mask).mean() > 0.999
    with pytest.raises(ValueError, match="at least one query"):
        predictor.predict_queries([])


def test_predict_queries_needs_a_frame(predictor):
    fresh = Predictor(predictor.model, predictor.processor, model_name="config:tiny", untrained=True)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict_queries(["x"])


def test_generate_mode_reads_the_mask_from_the_generated_tokens():
    """A scripted LLM that answers with the template: the mask comes from the generated ids' hidden
    states (no second pass over image and prompt) and equals the prefill mode's mask."""
    gen = Predictor.from_pretrained("config:tiny", mode="generate", refine="none")
    prefill = Predictor(gen.model, gen.processor, model_name="config:tiny", untrained=True)
    image, query = data.chelsea(), "the cat"
    script = gen.processor.answer_ids(gen.model.config.answer) + [gen.processor.ids.eos]
    real_logits, step = gen.model.lm_logits, iter(range(len(script)))

    def scripted(hidden):
        logits = real_logits(hidden)
        logits[..., script[next(step)]] = 1e4
        return logits

    gen.model.lm_logits = scripted
    run_llm_calls = []
    gen.model.run_llm = lambda *a: run_llm_calls.append(a)
    try:
        passes = gen.reasoner.passes
        pred = gen.predict(image, query)
    finally:
        del gen.model.lm_logits, gen.model.run_llm
    assert not run_llm_calls  # no full pass after generating
    # prefix + prompt rest + one step per generated token (EOS is not fed)
    assert gen.reasoner.passes - passes == 2 + len(script) - 1
    assert pred.answer == f"Sure, is the {pred.keyword}."
    assert "generate" in pred.timings_ms
    want = prefill.predict(image, query)
    assert (pred.mask == want.mask).mean() > 0.999 and pred.keyword == want.keyword


def test_bfloat16_runs_on_the_cpu(predictor):
    bf16 = Predictor.from_pretrained("config:tiny", dtype="bfloat16", refine="none")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    image = data.coffee()
    got, want = bf16.predict(image, QUERIES[0]), predictor.predict(image, QUERIES[0])
    assert got.mask.shape == image.shape[:2] and (got.mask == want.mask).mean() > 0.9
    bf16.set_image(image)
    assert bf16.predict_queries(QUERIES[:2])[0].mask.shape == image.shape[:2]
    reasoning = bf16.reason(image, QUERIES[0])
    assert reasoning.prompts.dtype == torch.bfloat16 and bf16.segment(image, reasoning)[0].mask.any() == got.mask.any()


def test_cached_token_tables_are_peft_s_tables_and_follow_training(predictor):
    """The predictor keeps peft's merged [SEG]/[KEY] embedding table between calls (exactly peft's
    values), rebuilds it when the trained rows change, and never caches with gradients on."""
    embed = predictor.model.llava.get_input_embeddings()
    layer = embed.token_adapter  # peft's TrainableTokensLayer inside its wrapper
    ids = torch.tensor([[predictor.processor.ids.seg, predictor.processor.ids.key, 5]])
    with torch.no_grad():
        first = embed(ids)
        assert layer.get_merged_weights(layer.active_adapters) is layer.get_merged_weights(layer.active_adapters)
        delta = layer.trainable_tokens_delta[layer.active_adapters[0]]
        saved = delta.clone()
        delta.add_(1.0)  # an optimizer step, in place
        try:
            assert torch.equal(embed(ids)[0, :2], first[0, :2] + 1.0) and torch.equal(embed(ids)[0, 2], first[0, 2])
        finally:
            delta.copy_(saved)
        assert torch.equal(embed(ids), first)
    with torch.enable_grad():
        table = layer.get_merged_weights(layer.active_adapters)
        assert table.requires_grad and table is not layer.get_merged_weights(layer.active_adapters)


def test_auto_precision():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="dtype 'int8'"):
        resolve_dtype("int8", torch.device("cpu"))
