"""Segmenter: frame + fused prompts S_hat -> masks (the SAM-bound half of KeySeg).

Runs SAM's image encoder and mask decoder with prompts a `Reasoner` produced, on the frame they
were reasoned on or on any later one. `encode` is SAM's `set_image`: an `EncodedFrame` keeps the
image embedding, so several prompts (queries) on one frame encode it once. Optionally the previous
frame's low-resolution mask logits go to SAM's prompt encoder as a dense prompt (streaming).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from keyseg_core.inference.category_gate import trim_to_region
from keyseg_core.inference.preprocess import placement, sam_image
from keyseg_core.inference.reasoner import Reasoning
from keyseg_core.inference.results import CategoryInstance, Prediction, mask_box
from keyseg_core.modeling.keyseg import KeySegModel
from keyseg_core.modeling.processor import KeySegProcessor, validate_image
from keyseg_core.modeling.sam import preprocess_sam
from keyseg_core.timing import Timer, no_timer


@dataclass
class EncodedFrame:
    """One frame's SAM image embedding and the sizes needed to map masks back onto it."""

    embedding: torch.Tensor  # (1, C, h, w)
    resized_hw: tuple[int, int]
    original_hw: tuple[int, int]


@dataclass
class Segmented:
    """Masks of one frame for N prompts: logits at the frame's size and at SAM's low resolution."""

    logits: torch.Tensor  # (N, H, W)
    low_res: torch.Tensor  # (N, 4h, 4w), what a later frame may take as its dense prompt
    iou: torch.Tensor  # (N,)


class Segmenter:
    """SAM of a KeySegModel driven by S_hat prompts: the model's own, or the segmenter an inference
    backend runs in its place (`sam`)."""

    def __init__(self, model: KeySegModel, processor: KeySegProcessor, sam: nn.Module | None = None) -> None:
        self.model = model
        self.processor = processor
        self.sam = model.sam if sam is None else sam
        self.device, self.dtype, self.on_device, self._upload = placement(model)
        self.frames = 0  # images encoded

    @property
    def accepts_mask_prompt(self) -> bool:
        """Whether the backend's decoder takes a dense mask prompt (the torch and compiled ones do)."""
        return bool(getattr(self.sam, "accepts_mask_prompt", False))

    def encode(self, image: np.ndarray, timer: Timer = no_timer) -> EncodedFrame:
        """SAM's set_image: preprocess one HxWx3 frame and run the image encoder once."""
        with timer("preprocess"):
            image = validate_image(image)
            if self.on_device:
                prepared = sam_image(self._upload(image), self.processor.sam_size)
            else:
                prepared = preprocess_sam(image, self.processor.sam_size)
            pixels = prepared.pixels[None].to(self.device, self.dtype)
        with timer("sam_encoder"):
            embedding = self.sam.encode(pixels)
        self.frames += 1
        return EncodedFrame(embedding, prepared.resized_hw, prepared.original_hw)

    def decode(self, frame: EncodedFrame, prompts: torch.Tensor, timer: Timer = no_timer,
               mask_prompt: torch.Tensor | None = None) -> Segmented:
        """(N, C) prompts on an encoded frame -> masks. `mask_prompt`: (1, 4h, 4w) low-res logits of an
        earlier frame, given to SAM as a dense prompt for every prompt (torch backends only)."""
        if mask_prompt is not None and not self.accepts_mask_prompt:
            raise ValueError(f"the {type(self.sam).__name__} backend takes no mask prompt; "
                             "use the torch or compile backend for previous-mask prompts")
        n = prompts.shape[0]
        logits, low_res, iou = self.model.decode_prompts(
            frame.embedding, prompts.to(frame.embedding.dtype), prompts.new_zeros(n, dtype=torch.long),
            [0] if n else [], [frame.resized_hw], [frame.original_hw], timer, mask_prompt, sam=self.sam)
        return Segmented(logits[0], low_res[0], iou[0])


def to_prediction(reasoning: Reasoning, logits: torch.Tensor, threshold: float, *, untrained: bool,
                  candidates: int, region: Region | None = None) -> Prediction:
    """The first [SEG]'s mask of `logits` (N, H, W) with the reasoning's keyword and answer, and the
    instance masks of its `instance_keywords` (the first rows); `region` trims the first rows' masks to
    where the category detector sees their categories."""
    rows = min(logits.shape[0], max(1, len(reasoning.instance_keywords)))
    masks = [_mask_and_score(logits[j], threshold, region, j) for j in range(rows)]
    mask, score = masks[0] if masks else (np.zeros(tuple(logits.shape[-2:]), bool), 0.0)
    instances = [CategoryInstance(k, m, s) for k, (m, s) in zip(reasoning.instance_keywords, masks)]
    return Prediction(mask=mask, score=score, keyword=reasoning.keyword, keyword_prob=reasoning.keyword_prob,
                      keyword_topk=list(reasoning.keyword_topk), answer=reasoning.answer, box=mask_box(mask),
                      keyword_candidates=candidates, untrained=untrained, category_mass=reasoning.category_mass,
                      instances=instances)


def refine_prediction(prediction: Prediction, logits: torch.Tensor,
                      refine: Callable[[np.ndarray], np.ndarray]) -> Prediction:
    """`prediction` (to_prediction's on `logits`) with each of its masks reshaped by `refine` (HxW bool
    -> HxW bool, e.g. a keyseg_core.inference.refine.MaskRefiner bound to the frame); scores and box
    follow the refined masks."""
    rows = [i.mask for i in prediction.instances] or [prediction.mask]
    if not any(m.any() for m in rows):
        return prediction
    masks = [refine(m) for m in rows]
    scores = [_score(logits[j].float(), m) for j, m in enumerate(masks)]
    instances = [replace(i, mask=m, score=s) for i, m, s in zip(prediction.instances, masks, scores)]
    return replace(prediction, mask=masks[0], score=scores[0], box=mask_box(masks[0]), instances=instances)


@dataclass
class Region:
    """Where the category detector sees each leading row's category: (R, H, W) maps on the frame, one
    per row to_prediction keeps, the threshold above which a mask is kept, and the share of the best
    component's peak a component needs. `keep_answer`: the first row's mask is never trimmed away
    entirely (on the reasoned frame, whose answer presence has already accepted; on a streamed frame
    a detector that sees nothing of the target there drops its mask, which keeps track ids steadier)."""

    maps: np.ndarray
    threshold: float
    component_ratio: float
    keep_answer: bool = False


def _mask_and_score(logits: torch.Tensor, threshold: float, region: Region | None = None, row: int = 0
                    ) -> tuple[np.ndarray, float]:
    """(H, W) logits -> the bool mask above the threshold (trimmed to the region's map of `row`, where
    given) and its score."""
    logits = logits.float()
    fg = (logits > threshold).cpu().numpy()
    if region is not None:
        fg = trim_to_region(fg, region.maps[row], region.threshold, region.component_ratio,
                            never_empty=region.keep_answer and row == 0)
    return fg, _score(logits, fg)


def _score(logits: torch.Tensor, fg: np.ndarray) -> float:
    """Mean foreground probability of float (H, W) `logits` inside the HxW bool mask `fg` (0 if empty)."""
    if not fg.any():
        return 0.0
    return float(torch.sigmoid(logits[torch.from_numpy(fg).to(logits.device)]).mean())
