"""The LLM prefill at static shapes (StaticCache, compiled): the same hidden states, S_hat prompts and
keywords as the eager DynamicCache path, frame after frame on the same buffers; a compiler that fails
at the compile backend's warm-up is one RuntimeError naming the cause."""

import numpy as np
import pytest
import torch

from keyseg_core.inference.reasoner import FrameFeatures, Reasoner
from keyseg_core.inference.static_prefill import StaticPrefill, bucket
from keyseg_core.timing import no_timer

CPU = torch.device("cpu")
# suffixes of different lengths in one batch (3 queries: padded to a batch of 4)
QUERIES = ["Which object holds the drink that is on the left side of the wooden table?", "the cup",
           "what is on the left"]
LATER = ["the cat", "a dog", "the lamp"]  # shorter: the buffers still hold the longer suffixes above


def _frames(model, processor, seed):
    """Two different frames (their prefixes differ), encoded once by the eager reasoner."""
    rng = np.random.default_rng(seed)
    reasoner = Reasoner(model, processor)
    return [reasoner.encode_frame(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)) for _ in range(2)]


def _fresh(frame):
    """The frame's features without its prefilled prefixes (each reasoner prefills its own)."""
    return FrameFeatures(frame.image_hw, frame.image_features)


def _hidden(reasoner, frame, queries):
    """(B, P+S, d) hidden states, ids and mask of `queries` after the frame's prefix, as reason_frame runs them."""
    answer = reasoner.processor.answer_ids(reasoner.model.config.answer)
    prompts = [reasoner._prompt(q, answer) for q in queries]
    prefix = reasoner._prefix(frame, prompts[0][0], no_timer)
    return reasoner._extend(prefix, [rest for _, rest in prompts])


def _same_reasonings(got, want):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.prompts, w.prompts, atol=1e-5, rtol=1e-5)
        assert g.keyword == w.keyword and g.answer == w.answer
        assert g.keyword_prob == pytest.approx(w.keyword_prob, abs=1e-5)


def _check_frames(model, processor, runner, frames):
    eager, static = Reasoner(model, processor), Reasoner(model, processor, llm=runner)
    buffers = None
    for frame, queries in zip(frames, (QUERIES, LATER)):
        want_h, want_ids, want_mask = _hidden(eager, _fresh(frame), queries)
        got_h, got_ids, got_mask = _hidden(static, _fresh(frame), queries)
        assert torch.equal(got_ids, want_ids) and torch.equal(got_mask, want_mask)
        real = want_mask  # the padded positions of a shorter suffix carry no meaning
        torch.testing.assert_close(got_h[real], want_h[real], atol=1e-5, rtol=1e-5)
        _same_reasonings(static.reason_frame(_fresh(frame), queries), eager.reason_frame(_fresh(frame), queries))
        held = [(key, layer.keys.data_ptr()) for key, cache in runner._caches.items() for layer in cache.layers]
        assert buffers is None or held == buffers  # the second frame reuses the first one's buffers
        buffers = held
    assert static.passes == eager.passes  # one prefill per frame and prefix, one pass per batch of suffixes


def test_static_cache_gives_the_eager_hidden_states_frame_after_frame(tiny):
    model, processor = tiny
    runner = StaticPrefill(model.llava.model.language_model)  # no compiler: the StaticCache path itself
    with torch.no_grad():  # outside inference mode too: the runner's results are plain tensors
        _check_frames(model, processor, runner, _frames(model, processor, 0))
    assert {(kind, b, s) for kind, b, s, _ in runner.shapes} == {("prefix", 1, 19), ("extend", 4, 32),
                                                                 ("extend", 4, 16)}


def test_generate_mode_starts_from_the_static_prefix(tiny):
    model, processor = tiny
    frame = _frames(model, processor, 4)[0]
    runner = StaticPrefill(model.llava.model.language_model)
    eager = Reasoner(model, processor, mode="generate", max_new_tokens=4)
    static = Reasoner(model, processor, mode="generate", max_new_tokens=4, llm=runner)
    with torch.inference_mode():
        _same_reasonings(static.reason_frame(_fresh(frame), QUERIES[:2]),
                         eager.reason_frame(_fresh(frame), QUERIES[:2]))
    assert static.steps == eager.steps and {kind for kind, *_ in runner.shapes} == {"prefix"}


def test_batches_past_the_largest_bucket_run_in_chunks_and_long_suffixes_eagerly(tiny):
    model, processor = tiny
    frame = _frames(model, processor, 1)[0]
    runner = StaticPrefill(model.llava.model.language_model, batch_buckets=(1, 2), suffix_buckets=(8, 20))
    eager, static = Reasoner(model, processor), Reasoner(model, processor, llm=runner)
    with torch.inference_mode():
        # suffixes of 16, 19, 16 tokens: one (2, 20) and one (1, 20) chunk; then one of 30: eager
        for queries in (["the cup", "what is on the left", "the cat"], [QUERIES[0], "the cup"]):
            want_h, _, mask = _hidden(eager, _fresh(frame), queries)
            got_h, _, _ = _hidden(static, _fresh(frame), queries)
            torch.testing.assert_close(got_h[mask], want_h[mask], atol=1e-5, rtol=1e-5)
    assert sorted((b, s) for kind, b, s, _ in runner.shapes if kind == "extend") == [(1, 20), (2, 20)]
    assert bucket(30, runner.suffix_buckets) is None and static.passes == eager.passes == 4  # 2 prefixes + 2 batches


def test_compiled_static_prefill_matches_eager_and_compiles_each_shape_once(tiny):
    model, processor = tiny
    graphs = []

    def counting(gm, example_inputs):  # a dynamo backend that runs the captured graph as it is
        graphs.append(gm)
        return gm.forward

    runner = StaticPrefill(model.llava.model.language_model, compile_mode="default", dynamo_backend=counting)
    with torch.inference_mode():
        _check_frames(model, processor, runner, _frames(model, processor, 2))
    # prefix (1, P), extensions (4, 32) and (4, 16): one graph per shape, none more for the second frame
    assert len(graphs) == len(runner.shapes) == 3


def test_aot_eager_compile_backend_llm_matches_eager(tiny):
    from keyseg_core.runtime.backends.compiled import WARM_QUERY, compile_llm

    model, processor = tiny
    runner, what = compile_llm(model, CPU, "default", "aot_eager")
    assert "one graph" in what and "16/32/64/128" in what
    warmed = set(runner.shapes)
    frame = _frames(model, processor, 3)[0]
    eager, static = Reasoner(model, processor), Reasoner(model, processor, llm=runner)
    with torch.inference_mode():
        # the load warmed the real prefix length and this query's bucket: nothing new to compile
        _same_reasonings(static.reason_frame(_fresh(frame), [WARM_QUERY]),
                         eager.reason_frame(_fresh(frame), [WARM_QUERY]))
    assert runner.shapes == warmed


def test_a_compile_failure_at_warm_up_is_one_runtime_error_naming_the_cause(tiny):
    from keyseg_core.runtime.backends.compiled import compile_llm

    model, _ = tiny

    def no_compiler(gm, example_inputs):
        raise RuntimeError("inductor: no C++ compiler found")

    # dynamo wraps it in a BackendCompilerFailed that names only the backend: the line says the cause
    with pytest.raises(RuntimeError, match=r"^torch.compile failed while warming up the LLM prefill "
                                           r"\(RuntimeError: inductor: no C\+\+ compiler found\)$") as failed:
        compile_llm(model, CPU, "default", no_compiler)
    assert "\n" not in str(failed.value)


def test_a_graph_break_under_fullgraph_is_retried_with_graph_breaks_allowed(tiny, monkeypatch):
    from keyseg_core.runtime.backends import compiled

    model, _ = tiny
    real = torch.compile
    tried = []

    def compile_(fn, **kwargs):
        tried.append(kwargs["fullgraph"])
        if kwargs["fullgraph"]:
            def broken(*args, **kw):
                raise torch._dynamo.exc.Unsupported("graph break in a layer")
            return broken
        return real(fn, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch, "compile", compile_)
    runner, what = compiled.compile_llm(model, CPU, "default", "eager")
    assert tried == [True, False] and "graph breaks allowed" in what and runner.shapes
