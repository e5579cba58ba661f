"""The result type the predictor returns; the ROS node and the CLI consume only this."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from keyseg_core.modeling.keyword_head import KeywordCandidate


@dataclass
class CategoryInstance:
    """One instance of a several-instance answer ("all the fruit"): a category in view and its own mask."""

    keyword: str
    mask: np.ndarray  # HxW bool
    score: float  # mean foreground probability inside the mask (0 if empty)


@dataclass
class Prediction:
    """Output of `Predictor.predict` for one image and one query.

    Attributes:
        mask: HxW bool array at the input image's size (logits > threshold).
        score: confidence in [0, 1]: mean foreground probability inside the mask (0 if empty).
        keyword: best keyword decoded from the model's own [KEY] output.
        keyword_prob: probability of `keyword` among the model's candidate keywords (a softmax over the
            candidates' scores, so it sums to 1 over those `keyword_candidates` keywords, not the vocabulary).
        keyword_topk: top-k keyword candidates, best first (includes `keyword`).
        answer: readable answer text: the template's reply with the keyword in prefill mode ("Sure, it is
            the bed."), the generated text (special tokens replaced) in generate mode.
        box: (x0, y0, x1, y1) pixel box of the mask, x1/y1 exclusive; None if the mask is empty.
        timings_ms: per-stage time in milliseconds (keys listed in `STAGES`), "total", and in
            generate mode also "generate" (token-by-token answer generation). Wall time, except with
            the predictor's `overlap_streams` on CUDA: there each stage is timed on its own CUDA
            stream, so stages overlap and may add up to more than "total" (always wall time).
        untrained: True when the weights are untrained (random init), so outputs are meaningless.
        keyword_candidates: how many candidate keywords `keyword_prob` is normalised over.
        fresh_reasoning: True when this frame had its own reasoning pass (always, outside streaming);
            False when its mask came from S_hat reasoned on an earlier frame (keyseg_core.inference.stream).
        reasoning_age_s: seconds between the frame the reasoning ran on and this one (0 when fresh).
        present: False when the model's presence calibration (keyseg_core.inference.presence) says the asked-for
            object is not in view: the mask is then empty, `box` None, and `answer` says so; True
            otherwise, and always for a checkpoint without a calibration.
        category_mass: with a category gate (`keyseg_core.inference.category_gate`), the share of the
            model's belief about the target that falls on categories in view; None without one.
        instances: with a category gate and the predictor's `instance_share`, every category in view
            holding that share of the belief, best first, each with its own mask (the first is `mask`'s
            category); empty otherwise.
    """

    mask: np.ndarray
    score: float
    keyword: str
    keyword_prob: float
    keyword_topk: list[KeywordCandidate]
    answer: str
    box: tuple[int, int, int, int] | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    untrained: bool = False
    keyword_candidates: int = 0
    fresh_reasoning: bool = True
    reasoning_age_s: float = 0.0
    present: bool = True
    category_mass: float | None = None
    instances: list[CategoryInstance] = field(default_factory=list)


# Stage names used in `Prediction.timings_ms` and by `keyseg bench`, in pipeline order.
STAGES = (
    "preprocess",
    "vision_tower",
    "llm_prefill",
    "fusion",
    "sam_encoder",
    "mask_decoder",
    "postprocess",
)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight (x0, y0, x1, y1) box of a boolean mask, x1/y1 exclusive; None for an empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
