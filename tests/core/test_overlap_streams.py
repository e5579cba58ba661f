"""overlap_streams: SAM's image encoder issued beside the LLM gives the sequential results (checked on
the CPU, where the side stream's work runs inline in the overlapped order); the side-stream helper and
the CUDA-event StageTimer, with CUDA faked where no GPU is."""

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage import data

from keyseg_core.inference.gpu_memory import OutOfGpuMemory
from keyseg_core.inference.overlap import SideStream, tensors_in
from keyseg_core.inference.results import STAGES
from keyseg_core.runtime.predictor import CUDA_GRAPHS_MODE, Predictor
from keyseg_core.timing import StageTimer

IMAGES = [data.astronaut(), data.chelsea(), data.coffee()]
QUERIES = ["the person on the left", "the cat", "Which object holds the drink?"]


@pytest.fixture(scope="module")
def predictor():
    return Predictor.from_pretrained("config:tiny")


def _same(got, want):
    for g, w in zip(got, want, strict=True):
        assert np.array_equal(g.mask, w.mask) and g.score == w.score and g.box == w.box
        assert g.keyword == w.keyword and g.answer == w.answer
        assert [(c.text, c.prob) for c in g.keyword_topk] == [(c.text, c.prob) for c in w.keyword_topk]


def _call_order(predictor, monkeypatch):
    """Records 'vision', 'sam' and 'llm' in the order the model's parts run."""
    order = []
    model = predictor.model
    for name, owner, attr in (("vision", model, "encode_images"), ("sam", model.sam, "encode")):
        fn = getattr(owner, attr)
        monkeypatch.setattr(owner, attr, lambda *a, _fn=fn, _name=name, **k: order.append(_name) or _fn(*a, **k))
    hook = model.llava.model.language_model.register_forward_pre_hook(lambda *_: order.append("llm"))
    return order, hook


def test_off_on_the_cpu_by_default_and_settable():
    assert Predictor.from_pretrained("config:tiny").overlap_streams is False
    forced = Predictor.from_pretrained("config:tiny", overlap_streams=True)
    assert forced.overlap_streams and not forced._side.active  # no stream on the CPU: the work runs inline


def test_predict_batch_overlapped_is_identical(predictor, monkeypatch):
    monkeypatch.setattr(predictor, "overlap_streams", False)
    order, hook = _call_order(predictor, monkeypatch)
    try:
        sequential = predictor.predict_batch(IMAGES, QUERIES)
        assert order == ["vision", "llm", "sam"]
        order.clear()
        monkeypatch.setattr(predictor, "overlap_streams", True)
        overlapped = predictor.predict_batch(IMAGES, QUERIES)
        assert order == ["vision", "sam", "llm"]  # the encoder is issued after the vision tower, before the LLM
    finally:
        hook.remove()
    assert predictor.reasoner.vision is None  # the vision callable lent to reason_batch is given back
    _same(overlapped, sequential)
    assert len({p.mask.shape for p in overlapped}) == 3 and all(p.mask.any() for p in overlapped)
    for p in overlapped:
        assert set(p.timings_ms) == set(STAGES) | {"total"}
        assert p.timings_ms["sam_encoder"] > 0 and p.timings_ms["vision_tower"] > 0


def test_precomputed_embeddings_are_taken_in_batch_order(predictor):
    """What the overlapped path relies on: `segment(image_embeddings=)` equals encoding inside, and the
    check above would see swapped embeddings (the masks differ)."""
    with torch.inference_mode():
        batch = predictor.processor(IMAGES[:2], QUERIES[:2]).to(predictor.device, predictor.dtype)
        reasoned = predictor.model.reason(batch)
        args = (batch.sam_pixels, reasoned.prompts, reasoned.seg_batch, batch.resized_hw, batch.original_hw)
        inside, _ = predictor.model.segment(*args)
        embeddings = predictor.model.encode_sam(batch.sam_pixels)
        given, _ = predictor.model.segment(*args, image_embeddings=embeddings)
        swapped, _ = predictor.model.segment(*args, image_embeddings=embeddings.flip(0))
        only_second = reasoned.seg_batch == 1  # a batch where sample 0 has no [SEG]: its row is skipped
        subset_args = (batch.sam_pixels, reasoned.prompts[only_second], reasoned.seg_batch[only_second],
                       batch.resized_hw, batch.original_hw)
        subset, _ = predictor.model.segment(*subset_args, image_embeddings=embeddings)
        subset_inside, _ = predictor.model.segment(*subset_args)  # encodes image 1 alone
        with pytest.raises(ValueError, match="1 image embeddings for a batch of 2"):
            predictor.model.segment(*args, image_embeddings=embeddings[:1])
    for a, b, c in zip(inside, given, swapped):
        assert torch.equal(a, b) and not torch.equal(a > 0, c > 0)
    assert subset[0].shape[0] == 0 and subset[1].shape[0] == 1
    torch.testing.assert_close(subset[1], subset_inside[1], rtol=1e-4, atol=1e-4)  # a batch of 1 vs of 2


def test_predict_queries_overlapped_is_identical(predictor, monkeypatch):
    monkeypatch.setattr(predictor, "overlap_streams", False)
    sequential = predictor.predict_queries(QUERIES, predictor.cache_frame(IMAGES[2]))
    monkeypatch.setattr(predictor, "overlap_streams", True)
    order, hook = _call_order(predictor, monkeypatch)
    frame = predictor.cache_frame(IMAGES[2])
    try:
        overlapped = predictor.predict_queries(QUERIES, frame)
        assert order == ["vision", "sam", "llm", "llm"]  # the prefix, then the queries as one batch
        order.clear()
        again = predictor.predict_queries(QUERIES[1:], frame)  # the frame is encoded: nothing to overlap
        assert order == ["llm"]
    finally:
        hook.remove()
    _same(overlapped, sequential)
    assert frame.sam is not None and again[0].timings_ms["sam_encoder"] == 0.0


def test_generate_mode_overlapped_is_identical():
    predictor = Predictor.from_pretrained("config:tiny", mode="generate")
    predictor.reasoner.max_new_tokens = 4
    sequential = predictor.predict(IMAGES[1], QUERIES[1])
    predictor.overlap_streams = True
    overlapped = predictor.predict(IMAGES[1], QUERIES[1])
    _same([overlapped], [sequential])
    assert set(overlapped.timings_ms) == set(sequential.timings_ms)


def test_out_of_memory_in_the_llm_after_the_encoder_was_issued(predictor, monkeypatch, cuda_oom):
    """The LLM fails while SAM's encoding is in flight: one OutOfGpuMemory, the reasoner's own vision
    callable is back, and the next call is served with the same result."""
    monkeypatch.setattr(predictor, "overlap_streams", True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    want = predictor.predict(IMAGES[1], QUERIES[1])

    def full(*_):
        raise cuda_oom

    hook = predictor.model.llava.model.language_model.register_forward_pre_hook(full)
    try:
        with pytest.raises(OutOfGpuMemory, match="while predicting a batch"):
            predictor.predict(IMAGES[1], QUERIES[1])
    finally:
        hook.remove()
    assert predictor.reasoner.vision is None
    _same([predictor.predict(IMAGES[1], QUERIES[1])], [want])


def test_no_two_cuda_graph_runners_at_once(predictor, monkeypatch):
    """The compile backend's CUDA graphs of one thread share a memory pool: its SAM encoder is not
    issued beside an LLM runner that replays graphs too; beside an eager LLM it is."""
    from keyseg_core.runtime.backends.compiled import CUDA_MODE, CPU_MODE

    assert CUDA_GRAPHS_MODE == CUDA_MODE
    graphs_sam, graphs_llm = SimpleNamespace(mode=CUDA_MODE), SimpleNamespace(compile_mode=CUDA_MODE)
    monkeypatch.setattr(predictor, "overlap_streams", True)
    assert predictor._overlaps(llm=None) and predictor._overlaps(llm=graphs_llm)  # the torch SAM
    monkeypatch.setattr(predictor.segmenter, "sam", graphs_sam)
    assert predictor._overlaps(llm=None) and predictor._overlaps(llm=SimpleNamespace(compile_mode=CPU_MODE))
    assert not predictor._overlaps(llm=graphs_llm)
    monkeypatch.setattr(predictor, "overlap_streams", False)
    assert not predictor._overlaps(llm=None)


# ---- the timer ----

def test_event_timer_is_wall_time_on_the_cpu():
    timer = StageTimer(torch.device("cpu"), events=True)
    assert not timer.events
    with timer("sam_encoder"):
        time.sleep(0.02)
    with timer("sam_encoder"):
        pass
    assert list(timer.ms) == ["sam_encoder"] and timer.ms["sam_encoder"] >= 20


class _FakeEvent:
    made = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.stream, self.waited = None, False
        _FakeEvent.made.append(self)

    def record(self, stream=None):
        self.stream, self.at = stream, len(_FakeEvent.made)

    def synchronize(self):
        self.waited = True

    def elapsed_time(self, end):
        assert end.waited, "an event is read before it was waited for"
        return float(end.at - self.at)


def test_event_timer_records_on_the_current_stream_and_resolves_once(monkeypatch):
    streams = iter(["default", "side", "default"])
    monkeypatch.setattr(torch.cuda, "Event", _FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: next(streams))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_: pytest.fail("events mode synchronised the device"))
    _FakeEvent.made.clear()
    timer = StageTimer(torch.device("cuda"), events=True)
    for stage in ("vision_tower", "sam_encoder", "vision_tower"):
        with timer(stage):
            torch.cuda.Event(enable_timing=True)  # one more event inside: each stage measures 2
    assert [e.stream for e in _FakeEvent.made if e.stream] == ["default"] * 2 + ["side"] * 2 + ["default"] * 2
    assert timer.ms == {"vision_tower": 4.0, "sam_encoder": 2.0}
    assert all(e.waited for e in _FakeEvent.made[2::3])  # the stages' end events
    assert timer.ms == {"vision_tower": 4.0, "sam_encoder": 2.0}  # read again: nothing added


# ---- the side stream ----

def test_side_stream_on_the_cpu_runs_inline():
    side = SideStream(torch.device("cpu"))
    ran = []
    launched = side.launch(lambda: ran.append(1) or torch.ones(2), reads=[torch.zeros(1)])
    assert ran == [1] and not side.active  # done at launch
    assert torch.equal(launched.result(), torch.ones(2))


class _FakeCudaTensor(torch.Tensor):
    @property
    def is_cuda(self):
        return True

    def record_stream(self, stream):
        _log.append(("record", id(self), stream))


class _FakeStream:
    def __init__(self, name):
        self.name = name

    def wait_stream(self, other):
        _log.append(("wait", self.name, other.name))

    def __repr__(self):
        return self.name


_log: list = []


def test_side_stream_orders_the_streams_and_keeps_memory(monkeypatch):
    default, side = _FakeStream("default"), _FakeStream("side")
    current = [default]

    class Context:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            current.append(self.stream)

        def __exit__(self, *exc):
            current.pop()

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: side)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current[-1])
    monkeypatch.setattr(torch.cuda, "stream", Context)
    _log.clear()
    pixels = torch.zeros(2).as_subclass(_FakeCudaTensor)
    embedding = torch.ones(2).as_subclass(_FakeCudaTensor)
    stream = SideStream(torch.device("cuda"))

    def work():
        _log.append(("work on", current[-1].name))
        return embedding

    launched = stream.launch(work, reads=[pixels])
    assert _log == [("wait", "side", "default"), ("record", id(pixels), side), ("work on", "side")]
    assert current == [default]
    _log.clear()
    assert launched.result() is embedding
    assert _log == [("wait", "default", "side"), ("record", id(embedding), default)]
    _log.clear()
    launched.result()
    assert _log == []  # joined once


def test_tensors_in_results():
    from keyseg_core.inference.segmenter import EncodedFrame

    a, b = torch.zeros(1), torch.ones(1)
    assert [t is a for t in tensors_in(a)] == [True]
    assert list(map(id, tensors_in((a, "x", b)))) == [id(a), id(b)]
    assert list(map(id, tensors_in(EncodedFrame(a, (1, 1), (2, 2))))) == [id(a)]
    assert list(tensors_in("text")) == []
