"""Streaming: the LLM reasons once per question (again on a new query, the timer or a request), SAM
runs on every frame; on a generated moving sequence the masks stay close to full passes; in the
background the frames never wait and a newer query replaces the pending one."""

import threading
import time

import numpy as np
import pytest

from keyseg_core.inference.stream import StreamingSegmenter
from keyseg_core.runtime.predictor import Predictor
from keyseg_core.scenes import generate_sequence


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("config:tiny", refine="none")  # the model's own masks, compared closely


@pytest.fixture(scope="module")
def video():
    return generate_sequence(12, seed=3)


def _counting(predictor):
    calls = []

    def reason(image, query):
        calls.append(query)
        return predictor.reason(image, query)

    return reason, calls


def _iou(a, b):
    union = (a | b).sum()
    return 1.0 if union == 0 else (a & b).sum() / union


def test_one_reasoning_for_many_frames_and_again_on_query_timer_request(predictor, video):
    reason, calls = _counting(predictor)
    stream = StreamingSegmenter(predictor, reason=reason, segment=predictor.segment, period_s=1.0)
    assert stream.step(video.frames[0], now=0.0) is None  # no query yet
    stream.set_query(video.texts[0])
    results = [stream.step(f, now=i * 0.05) for i, f in enumerate(video.frames)]  # 0.55 s of frames
    assert calls == [video.texts[0]]
    assert results[0].prediction.fresh_reasoning and results[0].prediction.reasoning_age_s == 0.0
    assert not any(r.prediction.fresh_reasoning for r in results[1:])
    assert results[-1].prediction.reasoning_age_s == pytest.approx(0.55)
    assert all(r.query == video.texts[0] for r in results)
    assert results[1].prediction.timings_ms["llm_prefill"] == 0.0  # frames run SAM only
    stream.set_query(video.texts[0])  # the same query again: nothing new to reason about
    stream.step(video.frames[0], now=0.6)
    assert len(calls) == 1
    assert stream.step(video.frames[1], now=1.0).prediction.fresh_reasoning  # the timer (period 1 s)
    assert len(calls) == 2
    stream.request()
    assert stream.step(video.frames[2], now=1.1).prediction.fresh_reasoning and len(calls) == 3
    stream.set_query(video.texts[1])
    r = stream.step(video.frames[3], now=1.2)
    assert calls[-1] == video.texts[1] and r.query == video.texts[1] and r.prediction.fresh_reasoning
    stream.clear()
    assert stream.step(video.frames[4], now=1.3) is None and len(calls) == 4


def test_streamed_masks_stay_close_to_full_passes_on_a_moving_sequence(predictor, video):
    stream = StreamingSegmenter(predictor)
    query = video.texts[0]
    stream.set_query(query)
    streamed = [stream.step(f, now=i / 30).prediction.mask for i, f in enumerate(video.frames)]
    full = [predictor.predict(f, query).mask for f in video.frames]
    ious = [_iou(s, f) for s, f in zip(streamed, full)]
    assert ious[0] > 0.999  # the reasoned frame is a full pass
    assert np.mean(ious) > 0.8 and min(ious) > 0.6, ious


def test_previous_mask_as_dense_prompt(predictor, video):
    stream = StreamingSegmenter(predictor, previous_mask=True)
    stream.set_query(video.texts[0])
    masks = [stream.step(f).prediction.mask for f in video.frames[:3]]
    assert all(m.shape == video.frames[0].shape[:2] for m in masks)


def test_failed_reasoning_is_retried_on_the_next_frame(predictor, video):
    attempts = []

    def flaky(image, query):
        attempts.append(query)
        if len(attempts) == 1:
            raise RuntimeError("simulated")
        return predictor.reason(image, query)

    stream = StreamingSegmenter(predictor, reason=flaky, segment=predictor.segment)
    stream.set_query("the cup")
    with pytest.raises(RuntimeError, match="simulated"):
        stream.step(video.frames[0])
    assert stream.step(video.frames[1]).prediction.fresh_reasoning and len(attempts) == 2


def test_background_reasoning_never_blocks_frames_and_the_newest_query_wins(predictor, video):
    gate, started = threading.Event(), threading.Event()
    calls, reasoned = [], []

    def slow_reason(image, query):
        calls.append(query)
        started.set()
        gate.wait(10)
        return predictor.reason(image, query)

    stream = StreamingSegmenter(predictor, reason=slow_reason, segment=predictor.segment, background=True,
                                on_reasoned=reasoned.append)
    try:
        stream.set_query("first")
        t0 = time.perf_counter()
        assert stream.step(video.frames[0]) is None  # handed to the worker
        assert started.wait(5)
        stream.set_query("second")  # while "first" is being reasoned
        stream.set_query("third")  # replaces the pending "second"
        waits = []
        for f in video.frames[1:6]:
            start = time.perf_counter()
            assert stream.step(f) is None  # no reasoning of "third" yet; the frame did not wait
            waits.append(time.perf_counter() - start)
        assert max(waits) < 0.5 and time.perf_counter() - t0 < 5
        gate.set()
        deadline = time.monotonic() + 20
        result = None
        while result is None and time.monotonic() < deadline:
            result = stream.step(video.frames[6])
            time.sleep(0.01)
        assert result is not None and result.query == "third" and not result.prediction.fresh_reasoning
        assert calls == ["first", "third"]  # "second" never ran
        assert [r.query for r in reasoned] == ["third"]  # the stale "first" result was dropped
        assert reasoned[0].prediction.fresh_reasoning
    finally:
        gate.set()
        assert stream.close(timeout=10)
