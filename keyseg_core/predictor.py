"""Predictor: image + query -> mask, confidence, keyword (+ alternatives), answer text, timings.

Separate from the nn.Module (as SAM's predictor is): it owns device/dtype, inference mode, the
keyword candidates and timing. Two modes:
  prefill   one forward pass over the prompt plus the forced answer template (no token-by-token
            generation), the fast path for robots;
  generate  the LLM first generates its answer; if that answer holds [SEG] the mask is taken from it,
            otherwise from the forced template (the free text is still returned).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from .backends import check_backend, use_backend
from .builder import build_model, registry_config
from .checkpoint import CONFIG_FILE, META_FILE, load_checkpoint
from .config import KEY_TOKEN, SEG_TOKEN, KeySegConfig
from .keyword_head import decode_keywords
from .model import KeySegModel
from .prediction import STAGES, Prediction, mask_box
from .processor import KeySegProcessor, validate_image
from .shipped import shipped_checkpoint
from .vocabulary import COCO_CATEGORIES

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
MODES = ("prefill", "generate")
CONFIG_PREFIX = "config:"


class StageTimer:
    """Context-manager factory recording wall time per stage (synchronising CUDA so numbers are real)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.ms: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.ms[stage] = self.ms.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class Predictor:
    """Runs a KeySegModel on images and queries. Use `from_pretrained` to construct."""

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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode '{mode}' is not one of {', '.join(MODES)}")
        self.model = model.eval()
        self.processor = processor
        self.model_name = model_name
        self.untrained = untrained
        self.mode = mode
        self.mask_threshold = mask_threshold
        self.max_new_tokens = max_new_tokens
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        vocab = model.config.keyword.vocabulary
        # where the candidates come from, for messages: decoding normalises over exactly this list
        self.keyword_source = "model config" if vocab else "COCO's 80 categories (the model names none)"
        self.keyword_candidates = list(dict.fromkeys(vocab or COCO_CATEGORIES))
        self._candidate_ids = [processor.keyword_ids(k) for k in self.keyword_candidates]

    @classmethod
    def from_pretrained(
        cls, model: str | None = None, *, device: str = "cpu", dtype: str = "float32", mode: str = "prefill",
        mask_threshold: float = 0.0, backend: str = "torch",
    ) -> Predictor:
        """Load a checkpoint dir, a hub id of one, 'config:<registry name>', a config file, or (None) the
        shipped KeySeg-Tiny, checked against its checksums.

        Registry configs and config files build untrained (random/base) weights; the result says so.
        backend: 'torch', or 'onnxruntime' to run SAM's exported graphs (exported and cached on first use).
        """
        check_backend(backend)
        if dtype not in DTYPES:
            raise ValueError(f"dtype '{dtype}' is not one of {', '.join(DTYPES)}")
        torch_device = torch.device(device)
        if torch_device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' requested but CUDA is not available")
        name = model or str(shipped_checkpoint())
        untrained = True
        if name.startswith(CONFIG_PREFIX):
            net, proc = build_model(registry_config(name[len(CONFIG_PREFIX):]), DTYPES[dtype], torch_device)
        elif Path(name).suffix in (".json", ".yaml", ".yml") and Path(name).is_file():
            net, proc = build_model(KeySegConfig.from_file(name), DTYPES[dtype], torch_device)
        else:
            directory = _checkpoint_dir(name)
            net, proc = load_checkpoint(directory, DTYPES[dtype], torch_device)
            untrained = not json.loads((directory / META_FILE).read_text()).get("train_steps")
        use_backend(net, backend, torch_device)
        return cls(net, proc, model_name=name, untrained=untrained, mode=mode, mask_threshold=mask_threshold)

    @torch.inference_mode()
    def predict(self, image: np.ndarray, query: str) -> Prediction:
        """Segment what `query` asks for in one HxWx3 uint8 RGB image."""
        return self.predict_batch([image], [query])[0]

    @torch.inference_mode()
    def predict_batch(self, images: list[np.ndarray], queries: list[str]) -> list[Prediction]:
        """Segment several images, one query each, in one batched forward pass."""
        if len(images) != len(queries):
            raise ValueError(f"{len(images)} images but {len(queries)} queries")
        timer = StageTimer(self.device)
        start = time.perf_counter()
        with timer("preprocess"):
            images = [validate_image(img, f"image {i}") for i, img in enumerate(images)]
        answers = None
        if self.mode == "generate":
            with timer("generate"):
                answers = self._answers(images, queries)
        with timer("preprocess"):
            batch = self.processor(images, queries, answers=[a for a, _ in answers] if answers else None)
            batch = batch.to(self.device, self.dtype)
        out = self.model.run(batch, timer=timer)
        results = []
        with timer("postprocess"):
            for i, logits in enumerate(out.mask_logits):
                results.append(self._result(i, logits, out, answers[i][1] if answers else None))
        total = (time.perf_counter() - start) * 1e3
        timings = {stage: timer.ms.get(stage, 0.0) for stage in STAGES} | {"total": total}
        if "generate" in timer.ms:
            timings["generate"] = timer.ms["generate"]
        for r in results:
            r.timings_ms = dict(timings)
        return results

    def _result(self, i: int, logits: torch.Tensor, out, generated: str | None) -> Prediction:
        """Sample i's first [SEG] mask and first [KEY] keyword -> Prediction.

        The answer is readable text: the template's reply with the decoded keyword (prefill), or the
        generated text with [SEG] dropped and [KEY] replaced by the keyword (generate).
        """
        if logits.shape[0] == 0:
            h, w = out.mask_logits[i].shape[-2:]
            mask, score = np.zeros((h, w), bool), 0.0
        else:
            first = logits[0].float()
            fg = first > self.mask_threshold
            mask = fg.cpu().numpy()
            score = float(torch.sigmoid(first[fg]).mean()) if bool(fg.any()) else 0.0
        keys = (out.key_batch == i).nonzero().flatten()
        if keys.numel():
            top = decode_keywords(out.keyword_logits[keys[0]], self.keyword_candidates, self._candidate_ids,
                                  self.model.config.keyword.top_k)
            keyword, prob = top[0].text, top[0].prob
        else:
            top, keyword, prob = [], "", 0.0
        return Prediction(mask=mask, score=score, keyword=keyword, keyword_prob=prob, keyword_topk=top,
                          answer=self._readable(generated, keyword), box=mask_box(mask),
                          keyword_candidates=len(self.keyword_candidates), untrained=self.untrained)

    def _readable(self, generated: str | None, keyword: str) -> str:
        template = self.model.config.template
        if generated is None:
            return template.reply.format(keyword=keyword) if keyword else template.reply_no_key
        text = generated.replace(SEG_TOKEN, "").replace(KEY_TOKEN, keyword)
        return " ".join(text.split()).replace(" .", ".").replace(" ,", ",")

    def _answers(self, images: list[np.ndarray], queries: list[str]) -> list[tuple[str, str]]:
        """Generate mode: (answer used for the mask, free text) per sample."""
        result = []
        forced = self.model.config.answer
        seg = self.processor.ids.seg
        for image, query in zip(images, queries):
            batch = self.processor([image], [query], answers=[""]).to(self.device, self.dtype)
            generated = self.model.llava.generate(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask.long(),
                pixel_values=batch.clip_pixels, max_new_tokens=self.max_new_tokens, do_sample=False,
                pad_token_id=self.processor.ids.pad,
            )[0, batch.input_ids.shape[1]:]
            generated = generated[generated != self.processor.ids.eos]
            text = self.processor.tokenizer.decode(generated, skip_special_tokens=False)
            result.append((text if seg in generated.tolist() else forced, text))
        return result


def _checkpoint_dir(name: str) -> Path:
    """A local checkpoint directory, or a hub repo id downloaded to the hub cache."""
    path = Path(name)
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file():
            raise FileNotFoundError(f"{path}: not a keyseg checkpoint (no {CONFIG_FILE})")
        return path
    if path.exists() or name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model '{name}' is neither a checkpoint directory nor a hub id (org/name)")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; one clear message
        raise RuntimeError(f"model '{name}': could not download from the hub ({exc})") from exc
