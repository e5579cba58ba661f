"""Predictor: image + query -> mask, confidence, keyword (+ alternatives), answer text, timings.

Separate from the nn.Module (as SAM's predictor is): it owns device/dtype, inference mode, the
backend and timing, and composes a `Reasoner` (LLM-bound) and a `Segmenter` (SAM-bound). Two modes:
  prefill   one forward pass over the prompt plus the forced answer template (no token-by-token
            generation), the fast path for robots;
  generate  the LLM first generates its answer from the prefilled prompt; if that answer holds [SEG]
            the mask is taken from the generated tokens' hidden states, otherwise from the forced
            template run after the same prefilled prompt (the free text is still returned).

With `overlap_streams` (on by default on CUDA) a full pass issues SAM's image encoder on a side CUDA
stream once the vision tower is queued, so that it runs while the LLM prefills; the mask decoder
waits for it (`keyseg_core.inference.overlap`). The results are those of the sequential order.

Out of GPU memory on a frame (any of predict_batch, predict_queries, reason, segment) fails that call
with one `OutOfGpuMemory` line naming the device, the step and the backend; the memory the step held
is freed, so the next call starts clean. Under backend 'auto', OOM_STEP_DOWN failures in a row of
one call steps down to the next backend (`keyseg_core.runtime.backends.step_down`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from keyseg_core.inference.gpu_memory import OutOfGpuMemory, free_gpu_memory, is_out_of_memory, summary
from keyseg_core.inference.category_gate import CategoryGate
from keyseg_core.inference.overlap import Launched, SideStream
from keyseg_core.inference.presence import PRESENCE_FILE, PresenceCalibration, not_here
from keyseg_core.inference.reasoner import MODES, FrameFeatures, Reasoner, Reasoning, cache_token_tables
from keyseg_core.inference.refine import MaskRefiner, make_refiner
from keyseg_core.inference.results import STAGES, Prediction
from keyseg_core.inference.segmenter import EncodedFrame, Region, Segmenter, refine_prediction, to_prediction
from keyseg_core.modeling.category_detector import DETECTOR_FILE, CategoryDetector
from keyseg_core.modeling.geometry_ranker import RANKER_FILE, GeometryRanker
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.processor import KeySegProcessor, validate_image
from keyseg_core.runtime.backends import BackendChoice, can_step_down, check_backend, step_down, use_backend
from keyseg_core.timing import StageTimer
from keyseg_core.weights.precision import enable_tf32, resolve_dtype
from keyseg_core.weights.resolve import load_model
from keyseg_core.weights.shipped import shipped_checkpoint

OOM_STEP_DOWN = 3  # out-of-memory failures in a row of one call before 'auto' steps down
# torch.compile's CUDA-graph mode, as the compile backend names it (backends.compiled.CUDA_MODE; a test
# checks they agree): not imported, so that the predictor loads without the compile backend's module
CUDA_GRAPHS_MODE = "reduce-overhead"
log = logging.getLogger("keyseg.predictor")
REGION_THRESHOLD = 0.02  # the category gate's mask region, chosen on generated val scenes (docs/results.md)
COMPONENT_RATIO = 0.5  # the region's components kept, chosen on generated val scenes (docs/results.md)


def _oom_reported(what: str) -> Callable[[Callable], Callable]:
    """Run a frame's call; out of GPU memory becomes one OutOfGpuMemory line (`Predictor._out_of_memory`)."""
    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def run(self: Predictor, *args, **kwargs):
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                cause = summary(exc)
            else:
                self._oom_streak[method.__name__] = 0
                return result
            # outside the except block: the traceback, and with it the step's tensors, is gone
            raise self._out_of_memory(method.__name__, what, cause)
        return run
    return wrap


@dataclass
class CachedFrame:
    """One frame as the predictor caches it (SAM's set_image, for the reasoner too): the SAM image
    embedding and the reasoner's vision features + prefilled prefix, each computed on first use."""

    image: np.ndarray
    sam: EncodedFrame | None = None
    features: FrameFeatures | None = None


class Predictor:
    """Runs a KeySegModel on images and queries. Use `from_pretrained` to construct.

    Composed of a `Reasoner` (image + query -> S_hat, keyword, answer; LLM-bound) and a `Segmenter`
    (frame + S_hat -> mask; SAM-bound). `predict`/`predict_batch` run both on the same frames;
    `set_image` + `predict_queries` answer several queries on one frame with the image encoded once
    and the queries in one batch; `reason` + `segment` run the halves on their own clocks (streaming).
    The LLM half and the SAM half each hold a lock, so two threads may drive them concurrently.
    """

    def __init__(
        self,
        model: KeySegModel,
        processor: KeySegProcessor,
        *,
        model_name: str,
        untrained: bool,
        mode: str = "prefill",
        mask_threshold: float = 0.0,
        max_new_tokens: int = 48,
        backend: BackendChoice | None = None,
        presence: PresenceCalibration | None = None,
        overlap_streams: bool | None = None,
        gate: CategoryGate | None = None,
        region_threshold: float = 0.0,
        refiner: MaskRefiner | None = None,
    ) -> None:
        self.model = model.eval()
        cache_token_tables(model)  # exact; skips peft's per-call rebuild of the (V, d) tables
        self.processor = processor
        self.model_name = model_name
        self.untrained = untrained
        self.mask_threshold = mask_threshold
        self.presence = presence  # None: every answer is taken as present (the paper's behaviour)
        # with a category gate: keep each mask where the detector's patch probability of its category
        # is above this (0: masks as SAM draws them). 0.02 was chosen on generated val scenes.
        self.region_threshold = region_threshold if gate is not None else 0.0
        # and keep only the mask's components where the map peaks at >= this share of the best one's
        self.component_ratio = COMPONENT_RATIO
        # every mask reshaped to the frame's colour edges (keyseg_core.inference.refine); None: as SAM draws it
        self.refiner = refiner
        self.backend = backend or BackendChoice("torch", "torch", "requested")
        self.reasoner = Reasoner(model, processor, mode=mode, max_new_tokens=max_new_tokens,
                                 vision=self.backend.vision, llm=self.backend.llm, gate=gate)
        self.segmenter = Segmenter(model, processor, sam=self.backend.sam)
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        # see from_pretrained; off by default on the CPU, where there is no stream to overlap on. The
        # side stream exists on CUDA either way, so that the option may be switched between calls.
        self.overlap_streams = self.device.type == "cuda" if overlap_streams is None else bool(overlap_streams)
        self._side = SideStream(self.device)
        self._park_torch_sam()
        self.keyword_source = self.reasoner.keyword_source
        self.keyword_candidates = self.reasoner.keyword_candidates
        self.llm_lock = threading.RLock()
        self.sam_lock = threading.RLock()
        self._frame: CachedFrame | None = None
        self._oom_streak: dict[str, int] = {}

    @property
    def instance_share(self) -> float | None:
        """With a category gate: every category in view holding this share of the model's belief about
        the target is an instance of the answer, with its own mask (`Prediction.instances`; "all the
        fruit"). None (default): one answer, no instances. Applies from the next reasoning."""
        return self.reasoner.instance_share

    @instance_share.setter
    def instance_share(self, share: float | None) -> None:
        if share is not None and not 0.0 < share <= 1.0:
            raise ValueError(f"instance_share: {share} must be in (0, 1], or None")
        self.reasoner.instance_share = share

    @property
    def mode(self) -> str:
        return self.reasoner.mode

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, *, device: str = "cpu", dtype: str = "auto", mode: str = "prefill",
        mask_threshold: float = 0.0, backend: str = "torch", cpu_fallback: bool = False, presence: bool = True,
        overlap_streams: bool | None = None, check_bases: bool = True, category_gate: bool = True,
        region_threshold: float = REGION_THRESHOLD, refine: str = "grabcut", geometry_ranker: bool = True,
    ) -> Predictor:
        """Load a checkpoint dir, a hub id of one, 'config:<registry name>', a config file, or (None) the
        shipped KeySeg-Tiny, checked against its checksums.

        Registry configs and config files build untrained (random/base) weights; the result says so.
        dtype: 'auto' (bfloat16 on CUDA, float16 on a GPU without bfloat16, float32 on the CPU),
        float32, float16 or bfloat16 (refused before loading on a GPU without it); the model is built
        straight in that dtype on the device, and on CUDA float32 matmuls use TF32.
        backend: 'torch', 'compile', 'onnxruntime', 'tensorrt' or 'auto' (keyseg_core.runtime.backends): a named
        backend that cannot load is an error that says why; 'auto' falls back and logs its choice.
        cpu_fallback: a model that does not fit in GPU memory is loaded on the CPU (float32) with one
        warning, instead of an OutOfGpuMemory error. Off by default: a robot that silently runs a
        GPU-sized model on its CPU misses every deadline; where slow is better than nothing, allow it.
        presence: apply the checkpoint's presence calibration (its presence.json, written by `keyseg
        eval-presence`), so that an object out of view gets "not here" (Prediction.present False)
        instead of a mask; False answers every query with a mask, as the paper does.
        overlap_streams: in a full pass (`predict`, `predict_batch`, `predict_queries` on a frame SAM has
        not encoded yet, generate mode) SAM's image encoder runs on a side CUDA stream beside the LLM
        prefill and fusion, issued after the vision tower; the mask decoder waits for it (not where
        the LLM pass would replay the compile backend's CUDA graphs at the same time). Stages are
        then timed with CUDA events on their own stream (`StageTimer(events=True)`), so they may add up
        to more than "total", which stays wall time. None (default): on for CUDA, off on the CPU. True
        on the CPU takes the same order of calls with the work run inline (no stream), which is how
        the tests check that it gives the sequential results; False: everything on one stream, each
        stage synchronised.
        check_bases: a checkpoint's frozen base weights must match the fingerprint saved with it. Off
        only for timing runs whose bases are a transport copy (scripts/bench_gpu.sh's KeySeg-Tiny).
        category_gate: use the checkpoint's category detector (category_detector.safetensors, written by
        `keyseg attach-detector`) to pick each [SEG]'s category among those in view
        (keyseg_core.inference.category_gate); False runs the fusion's own output, as the paper does.
        region_threshold: with the category gate, each mask is kept where the detector's patch
        probability of its category (mapped onto the frame) is above this; 0 keeps SAM's masks whole.
        geometry_ranker: with the category gate, re-rank its candidates by size and place as the query
            asks, where the checkpoint has a ranker (geometry_ranker.safetensors, `keyseg fit-ranker`).
        refine: 'grabcut' reshapes every mask to the frame's colour edges (keyseg_core.inference.refine;
        about 30 ms a mask on a CPU core, frames refined at 320 px at most); 'none' keeps SAM's masks.
        """
        if not 0.0 <= region_threshold < 1.0:
            raise ValueError(f"region_threshold: {region_threshold} must be in [0, 1)")
        refiner = make_refiner(refine)
        check_backend(backend)
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is not one of {', '.join(MODES)}")
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' requested but CUDA is not available")
        torch_dtype = resolve_dtype(dtype, torch_device)
        if torch_device.type == "cuda":
            enable_tf32()
        name = model or str(shipped_checkpoint())
        try:
            net, proc, untrained = load_model(name, torch_dtype, torch_device, check_bases)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            cause = (f"out of GPU memory on {torch_device} while loading model '{name}' in "
                     f"{str(torch_dtype).replace('torch.', '')} ({summary(exc)})")
        else:
            cause = None
        if cause is not None:  # outside the except block, so that the partial model is freed
            free_gpu_memory()
            if not cpu_fallback:
                raise OutOfGpuMemory(f"{cause}; free GPU memory, choose a smaller model or dtype, "
                                     "or allow cpu_fallback")
            log.warning("%s; loading it on the CPU in float32 instead (cpu_fallback)", cause)
            torch_device, torch_dtype = torch.device("cpu"), torch.float32
            net, proc, untrained = load_model(name, torch_dtype, torch_device, check_bases)
        choice = use_backend(net.eval(), backend, torch_device)
        gate = _category_gate(name, net, geometry_ranker) if category_gate else None
        calibration = _presence_calibration(name) if presence else None
        if calibration is not None and calibration.signal == "category" and gate is None:
            raise ValueError(f"{Path(name) / PRESENCE_FILE}: calibrated on the category gate's signal; load with "
                             "the category gate on, or with presence off")
        return cls(net, proc, model_name=name, untrained=untrained, mode=mode, mask_threshold=mask_threshold,
                   backend=choice, presence=calibration, overlap_streams=overlap_streams, gate=gate,
                   region_threshold=region_threshold, refiner=refiner)

    # ---- one-shot: image + query -> prediction ----

    @torch.inference_mode()
    def predict(self, image: np.ndarray, query: str) -> Prediction:
        """Segment what `query` asks for in one HxWx3 uint8 RGB image."""
        return self.predict_batch([image], [query])[0]

    @_oom_reported("predicting a batch")
    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray], queries: list[str]) -> list[Prediction]:
        """Segment several images, one query each, in one batched forward pass."""
        if len(images) != len(queries):
            raise ValueError(f"{len(images)} images but {len(queries)} queries")
        timer = self._full_pass_timer()
        start = time.perf_counter()
        with timer("preprocess"):
            images = [validate_image(img, f"image {i}") for i, img in enumerate(images)]
        if self.mode == "generate":
            return self._predict_generated(images, queries, timer, start)
        with timer("preprocess"):
            batch = self.processor(images, queries).to(self.device, self.dtype)
        embeddings = None
        # the forced answer holds a [SEG] in every sample: encode them all; reason_batch runs the LLM
        # eagerly (KeySegModel.reason), never a compiled runner's CUDA graphs
        if self._overlaps(llm=None):
            with self.llm_lock:
                features = self.reasoner.vision_features(batch.clip_pixels, timer)
                with self.sam_lock:
                    encoding = self._side.launch(
                        lambda: self.model.encode_sam(batch.sam_pixels, timer, sam=self.segmenter.sam),
                        reads=[batch.sam_pixels])
                reasoned, reasonings = self.reasoner.reason_batch(batch, queries, timer, features=features,
                                                                  images=images)
            with self.sam_lock:
                embeddings = encoding.result()
        else:
            with self.llm_lock:
                reasoned, reasonings = self.reasoner.reason_batch(batch, queries, timer, images=images)
        with self.sam_lock:
            masks, _ = self.model.segment(batch.sam_pixels, reasoned.prompts, reasoned.seg_batch, batch.resized_hw,
                                          batch.original_hw, timer, sam=self.segmenter.sam,
                                          image_embeddings=embeddings)
        with timer("postprocess"):
            results = [self._prediction(r, m, image) for r, m, image in zip(reasonings, masks, images)]
        return self._timed(results, timer, start)

    def _predict_generated(self, images: list[np.ndarray], queries: list[str], timer: StageTimer,
                           start: float) -> list[Prediction]:
        """Generate mode: per image, the answer generated from the prefilled prompt, then its mask."""
        results = []
        for image, query in zip(images, queries):
            with self.llm_lock:
                features = self.reasoner.encode_frame(image, timer)
                overlap = self._overlaps(llm=getattr(self.reasoner, "llm", None))
                encoding = self._launch_sam_encoding(image, timer) if overlap else None
                (reasoning,) = self.reasoner.reason_frame(features, [query], timer)
            with self.sam_lock:
                encoded = self.segmenter.encode(image, timer) if encoding is None else encoding.result()
                segmented = self.segmenter.decode(encoded, reasoning.prompts, timer)
            with timer("postprocess"):
                results.append(self._prediction(reasoning, segmented.logits, image))
        return self._timed(results, timer, start)

    # ---- one frame, several queries: SAM's set_image ----

    def cache_frame(self, image: np.ndarray) -> CachedFrame:
        """A frame to ask several queries about (`predict_queries(queries, frame)`); each half encodes it
        on first use."""
        return CachedFrame(validate_image(image))

    def set_image(self, image: np.ndarray) -> CachedFrame:
        """Cache `image`: later `predict_queries` calls run the vision tower, the prompt prefix and SAM's
        image encoder on it once. Returns the cached CachedFrame."""
        self._frame = self.cache_frame(image)
        return self._frame

    @_oom_reported("predicting queries on a frame")
    @torch.inference_mode()
    def predict_queries(self, queries: list[str], frame: CachedFrame | None = None) -> list[Prediction]:
        """Several queries on one frame (default: the `set_image` one) as one batch; the frame's
        encodings are computed on first use and reused by later calls."""
        frame = frame or self._frame
        if frame is None:
            raise RuntimeError("predict_queries needs a frame: call set_image(image) first")
        if not queries:
            raise ValueError("give at least one query")
        timer = self._full_pass_timer()
        start = time.perf_counter()
        with self.llm_lock:
            if frame.features is None:
                frame.features = self.reasoner.encode_frame(frame.image, timer)
            encoding = None
            if frame.sam is None and self._overlaps(llm=getattr(self.reasoner, "llm", None)):
                encoding = self._launch_sam_encoding(frame.image, timer)
            reasonings = self.reasoner.reason_frame(frame.features, list(queries), timer)
        with self.sam_lock:
            if encoding is not None:
                frame.sam = encoding.result()
            elif frame.sam is None:
                frame.sam = self.segmenter.encode(frame.image, timer)
            prompts = torch.cat([r.prompts[:_answer_rows(r)] for r in reasonings])
            segmented = self.segmenter.decode(frame.sam, prompts, timer)
        with timer("postprocess"):
            results, row = [], 0
            for r in reasonings:
                rows = min(len(r.prompts), _answer_rows(r))
                results.append(self._prediction(r, segmented.logits[row: row + rows], frame.image))
                row += rows
        return self._timed(results, timer, start)

    # ---- SAM's encoder beside the LLM (overlap_streams) ----

    def _overlaps(self, llm: object | None) -> bool:
        """Whether this pass issues SAM's encoder on the side stream: with overlap_streams on, unless both
        the SAM encoder and the LLM runner it would overlap (`llm`; None: eager) replay torch.compile's
        CUDA graphs. Those of one thread share one memory pool, one graph reusing memory another
        left, so they must replay one at a time (the vision tower's graph runs before the encoder is
        issued, the decoder's after it is joined)."""
        if not self.overlap_streams:
            return False
        return not (_replays_cuda_graphs(self.segmenter.sam) and _replays_cuda_graphs(llm))

    def _full_pass_timer(self) -> StageTimer:
        """A full pass's timer: with overlapping streams, CUDA events per stream instead of a device
        synchronisation at each stage (which would serialise the streams)."""
        return StageTimer(self.device, events=self.overlap_streams and self._side.active)

    def _launch_sam_encoding(self, image: np.ndarray, timer: StageTimer) -> Launched[EncodedFrame]:
        """SAM's set_image of one frame issued on the side stream (call with the LLM lock held: the
        lock order is LLM, then SAM, as in `_step_down`)."""
        with self.sam_lock:
            return self._side.launch(lambda: self.segmenter.encode(image, timer))

    # ---- the two clocks: reason once per question, segment every frame ----

    @_oom_reported("reasoning on a frame")
    @torch.inference_mode()
    def reason(self, image: np.ndarray, query: str) -> Reasoning:
        """The LLM-bound half on one frame: S_hat, keyword and answer for `query` (timings included)."""
        timer = StageTimer(self.device)
        start = time.perf_counter()
        with self.llm_lock:
            reasoning = self.reasoner.reason(image, query, timer)
        reasoning.timings_ms = dict(timer.ms) | {"total": (time.perf_counter() - start) * 1e3}
        reasoning.finished = time.monotonic()
        return reasoning

    @_oom_reported("segmenting a frame")
    @torch.inference_mode()
    def segment(self, image: np.ndarray, reasoning: Reasoning, mask_prompt: torch.Tensor | None = None
                ) -> tuple[Prediction, torch.Tensor]:
        """The SAM-bound half on one frame with an earlier reasoning's S_hat: (prediction, low-res
        logits of its mask, which the next frame may take as `mask_prompt`)."""
        timer = StageTimer(self.device)
        start = time.perf_counter()
        image = validate_image(image)
        with self.sam_lock:
            prompts = reasoning.prompts[:_answer_rows(reasoning)]
            segmented = self.segmenter.decode(self.segmenter.encode(image, timer), prompts, timer,
                                              mask_prompt=mask_prompt)
        sight = None
        if self.region_threshold > 0 and reasoning.categories:  # where the categories are in this frame
            # the detector is frozen and stateless: no lock, so a reasoning pass never stalls the frame
            sight = self.reasoner.sight_frame(image, timer)
        with timer("postprocess"):
            prediction = self._prediction(reasoning, segmented.logits, image, sight)
        (prediction,) = self._timed([prediction], timer, start)
        return prediction, segmented.low_res[:1]

    # ---- out of GPU memory ----

    def _out_of_memory(self, call: str, what: str, cause: str) -> OutOfGpuMemory:
        """Free the failed call's memory and count it; the OOM_STEP_DOWN-th in a row of one call steps
        'auto' down to the next backend (the frame still fails: the next one runs on the new backend)."""
        free_gpu_memory()
        streak = self._oom_streak[call] = self._oom_streak.get(call, 0) + 1
        message = f"out of GPU memory on {self.device} while {what} (backend '{self.backend.name}'): {cause}"
        if streak >= OOM_STEP_DOWN:
            message += self._step_down(f"ran out of GPU memory on {streak} calls of {call} in a row")
        return OutOfGpuMemory(message)

    def _step_down(self, why: str) -> str:
        """Under 'auto', the next backend in place of this one: what happened, for the error line."""
        with self.llm_lock, self.sam_lock:
            old = self.backend
            if not can_step_down(old):
                return ""
            # the old runtime's last references go; every backend loads from the model's torch parts
            self.segmenter.sam, self.reasoner.vision, self.reasoner.llm = self.model.sam, None, None
            self.model.sam.to(self.device)
            new = step_down(self.model, old, self.device, why)
            self.backend, self.reasoner.vision, self.reasoner.llm = new, new.vision, new.llm
            self.segmenter.sam = self.model.sam if new.sam is None else new.sam
            self._park_torch_sam()
            self._oom_streak.clear()
        return f"; backend auto stepped down from '{old.name}' to '{new.name}'"

    def _park_torch_sam(self) -> None:
        """A backend that runs SAM on its own leaves the model's torch SAM idle: it waits in host memory
        (a later step down loads from it) instead of holding GPU memory. Compile wraps it: it stays."""
        sam = self.backend.sam
        if sam is None or self.device.type != "cuda" or any(m is self.model.sam for m in sam.modules()):
            return
        self.model.sam.to("cpu")
        free_gpu_memory()

    # ---- results ----

    def _prediction(self, reasoning: Reasoning, logits: torch.Tensor, image: np.ndarray,
                    sight: torch.Tensor | None = None) -> Prediction:
        """`logits` (N, H, W) of the reasoning's prompt rows on the HxWx3 frame `image` -> Prediction;
        with a region threshold, each gated row's mask is kept where the detector's `sight` of that
        frame (default: the reasoned frame's, where the answer's mask is never trimmed away entirely)
        sees its category; with a refiner, each mask is refined."""
        region = None
        reasoned_frame = sight is None
        sight = reasoning.sight if sight is None else sight
        if self.region_threshold > 0 and sight is not None and reasoning.categories:
            rows = reasoning.categories[:logits.shape[0]]
            maps = self.reasoner.gate.region(sight, rows, tuple(logits.shape[-2:]),
                                             self.model.config.backbone.image_preprocess)
            region = Region(maps.cpu().numpy(), self.region_threshold, self.component_ratio,
                            keep_answer=reasoned_frame)
        prediction = to_prediction(reasoning, logits, self.mask_threshold, untrained=self.untrained,
                                   candidates=len(self.keyword_candidates), region=region)
        # presence is decided on the masks it was calibrated on, and nothing is refined for "not here"
        if self.presence is not None and not self.presence.present(prediction):
            return not_here(prediction)
        if self.refiner is None:
            return prediction
        return refine_prediction(prediction, logits, functools.partial(self.refiner, image))

    @staticmethod
    def _timed(results: list[Prediction], timer: StageTimer, start: float) -> list[Prediction]:
        total = (time.perf_counter() - start) * 1e3
        timings = {stage: timer.ms.get(stage, 0.0) for stage in STAGES} | {"total": total}
        if "generate" in timer.ms:
            timings["generate"] = timer.ms["generate"]
        for r in results:
            r.timings_ms = dict(timings)
        return results


def _answer_rows(reasoning: Reasoning) -> int:
    """Prompt rows a prediction needs: the first [SEG]'s, or one per instance category."""
    return max(1, len(reasoning.instance_keywords))


def _replays_cuda_graphs(runner: object | None) -> bool:
    """Whether a backend's SAM segmenter or LLM runner replays torch.compile's CUDA graphs."""
    return runner is not None and CUDA_GRAPHS_MODE in (getattr(runner, "mode", None),
                                                       getattr(runner, "compile_mode", None))


def _category_gate(name: str, model: KeySegModel, geometry_ranker: bool = True) -> CategoryGate | None:
    """The category detector saved beside a local checkpoint, on the model's device and in its dtype,
    with the geometry ranker saved there if any and wanted (None for configs, hub ids, or no detector)."""
    path = Path(name) / DETECTOR_FILE
    if not path.is_file():
        return None
    if model.fusion.codebook is None:
        raise ValueError(f"{path}: a category detector needs a codebook fusion, and this model has none")
    param = next(model.parameters())
    detector = CategoryDetector.load(path).to(param.device, param.dtype)
    ranker_path = Path(name) / RANKER_FILE
    ranker = GeometryRanker.load(ranker_path).to(param.device) if geometry_ranker and ranker_path.is_file() else None
    hidden_size = model.llava.config.text_config.hidden_size
    if ranker is not None and ranker.weight.shape[0] != hidden_size:
        raise ValueError(f"{ranker_path}: fitted on hidden states of size {ranker.weight.shape[0]}, but this "
                         f"model's LLM has {hidden_size}")
    return CategoryGate(detector, model.fusion.codebook.shape[0], ranker)


def _presence_calibration(name: str) -> PresenceCalibration | None:
    """The presence calibration saved beside a local checkpoint (None for configs, hub ids, or none saved)."""
    path = Path(name) / PRESENCE_FILE
    return PresenceCalibration.load(path) if path.is_file() else None
