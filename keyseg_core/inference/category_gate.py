"""Category gate: the codebook fusion's choice of category, restricted to what the frame holds.

A codebook fusion (`fusion.codebook: K`) turns each [SEG] into K logits over category prompts, so the
model's belief about the target is p_llm(c) = softmax(logits). The `CategoryDetector` gives P(c), the
probability that category c is in view (`visible`: the mean of what it sees on the whole frame and on
its corner tiles, calibrated; the detector's settings). Their product g(c) = p_llm(c) P(c) is the belief that the
target is c and c is here:

- the prompt given to SAM is the codebook row of argmax g (SAM was trained on exactly those rows;
  a mixture that lands between rows segments less), and the keyword is that category's name, so
  mask and keyword name the same object;
- mass = sum g is how much of the model's belief falls on things in view: small when the asked-for
  object is not here (the "category" signal of `keyseg_core.inference.presence`);
- every category in view that holds a set share of the normalised g is an instance of the answer,
  with its own prompt and mask ("all the fruit": each fruit in view);
- a mask can be trimmed to where the detector sees its category (`region`, `trim_to_region`): this
  SAM's masks spill onto neighbouring objects, which the detector's patch map of the category does
  not cover, or covers less than the object itself;
- with a geometry ranker (`keyseg_core.modeling.geometry_ranker`), the top-k of g are re-ranked by
  their size and place on the detector's map as the query asks ("the smallest tool", `rerank`).

Not in the paper; a model without a codebook or a detector runs as the paper does.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from keyseg_core.modeling.category_detector import CategoryDetector
from keyseg_core.modeling.geometry_ranker import GeometryRanker
from keyseg_core.modeling.keyword_head import KeywordCandidate


@dataclass
class GatedChoice:
    """One [SEG]'s gated choice."""

    index: int  # the chosen category (a codebook row)
    prompt: torch.Tensor  # (C,) that row, SAM's prompt
    probs: torch.Tensor  # (K,) g normalised to sum 1
    mass: float  # sum of g: the model's belief that falls on categories in view


class CategoryGate:
    """A detector whose categories are a codebook fusion's rows, in order."""

    def __init__(self, detector: CategoryDetector, codebook_size: int, ranker: GeometryRanker | None = None) -> None:
        if len(detector.names) != codebook_size:
            raise ValueError(f"category detector: {len(detector.names)} categories, but the model's "
                             f"fusion.codebook has {codebook_size} prompts (one per category, in the same order)")
        self.detector = detector
        self.names = detector.names
        self.ranker = ranker

    def sight(self, clip_pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, s, s) CLIP pixels -> (B, P, K) each patch's probability of each category; the largest
        over the patches is the raw probability that the category is in view."""
        return self.detector.patch_probs(clip_pixels)

    def tiles(self, image: np.ndarray) -> list[np.ndarray]:
        """The four corner tiles of an HxWx3 frame the detector also looks at (none with tiles 0):
        each `tiles` of the frame's height and width, so together they cover it."""
        fraction = self.detector.tiles
        if not fraction:
            return []
        h, w = image.shape[:2]
        th, tw = max(1, int(h * fraction)), max(1, int(w * fraction))
        return [np.ascontiguousarray(image[y:y + th, x:x + tw]) for y in (0, h - th) for x in (0, w - tw)]

    def visible(self, sight: torch.Tensor, tiles_sight: torch.Tensor | None = None) -> torch.Tensor:
        """(P, K) sight of the frame and (T, P, K) of its tiles -> (K,) calibrated visibility: the mean
        of the frame's largest patch probability and the tiles' (a small object fills more of a tile)."""
        visible = sight.amax(dim=0)
        if tiles_sight is not None and tiles_sight.shape[0]:
            visible = (visible + tiles_sight.amax(dim=1).amax(dim=0)) / 2
        return self.detector.calibrated(visible)

    @staticmethod
    def region(sight: torch.Tensor, categories: list[int], image_hw: tuple[int, int], mode: str) -> torch.Tensor:
        """(P, K) patch probabilities of one frame -> (R, H, W) each category's probability map on the
        frame, the patch grid mapped back through the CLIP preprocessing `mode` ('pad': the frame
        centred in a square; 'crop': its centre square, outside which the map is 1: not seen, not trimmed)."""
        grid = int(round(sight.shape[0] ** 0.5))
        maps = sight[:, categories].T.reshape(len(categories), 1, grid, grid).float()
        h, w = image_hw
        if mode == "pad":
            side = max(h, w)
            full = F.interpolate(maps, (side, side), mode="bilinear", align_corners=False)[:, 0]
            y0, x0 = (side - h) // 2, (side - w) // 2
            return full[:, y0:y0 + h, x0:x0 + w]
        short = min(h, w)
        out = maps.new_ones(len(categories), h, w)
        y0, x0 = (h - short) // 2, (w - short) // 2
        out[:, y0:y0 + short, x0:x0 + short] = F.interpolate(maps, (short, short), mode="bilinear",
                                                              align_corners=False)[:, 0]
        return out

    def choose(self, logits: torch.Tensor, visible: torch.Tensor, codebook: torch.Tensor) -> list[GatedChoice]:
        """(N, K) codebook logits of N [SEG]s on one frame, (K,) visibility, (K, C) codebook -> N choices."""
        gated = logits.float().softmax(dim=-1) * visible.float()[None]  # (N, K)
        mass = gated.sum(dim=-1)
        probs = gated / mass.clamp(min=torch.finfo(torch.float32).tiny)[:, None]
        best = gated.argmax(dim=-1)
        return [GatedChoice(int(k), codebook[k], probs[n], float(mass[n])) for n, k in enumerate(best.tolist())]

    def rerank(self, choice: GatedChoice, hidden: torch.Tensor, sight: torch.Tensor,
               codebook: torch.Tensor) -> GatedChoice:
        """The choice with its top-k re-ranked by the geometry ranker: (d,) the [SEG]'s hidden state,
        (P, K) the frame's sight. The top-k keep their beliefs, handed out again in the ranker's
        order (the best score gets the largest), so the top-k set and the mass (presence) are
        unchanged. Without a ranker, the choice itself."""
        if self.ranker is None:
            return choice
        probs, order = choice.probs.topk(min(self.ranker.top_k, len(self.names)))
        with torch.no_grad():
            scores = self.ranker.scores(hidden.to(self.ranker.weight.device), probs,
                                        sight[:, order].to(self.ranker.weight.device))
        ranked = order[scores.argsort(descending=True)]
        reranked = choice.probs.clone()
        reranked[ranked] = probs
        index = int(ranked[0])
        return GatedChoice(index, codebook[index], reranked, choice.mass)

    def instances(self, choice: GatedChoice, share: float) -> list[int]:
        """The categories holding at least `share` of the choice's gated belief, best first; always
        the chosen one (several instances of what was asked: "all the fruit")."""
        order = choice.probs.argsort(descending=True).tolist()
        return [choice.index] + [k for k in order if k != choice.index and float(choice.probs[k]) >= share]

    def candidates(self, choice: GatedChoice, top_k: int) -> list[KeywordCandidate]:
        """The top-k categories of a choice, best first, as keyword candidates."""
        probs, order = choice.probs.topk(min(top_k, len(self.names)))
        return [KeywordCandidate(self.names[int(i)], float(p)) for p, i in zip(probs.tolist(), order.tolist())]


def trim_to_region(mask: np.ndarray, region: np.ndarray, threshold: float, component_ratio: float,
                   never_empty: bool = False) -> np.ndarray:
    """HxW bool mask, HxW category map -> the mask where the map is above `threshold`, keeping only the
    8-connected components whose largest map value is at least `component_ratio` of the best
    component's (0 keeps them all): a spill onto a neighbour sits where the map is weaker.
    `never_empty`: where the map is nowhere above the threshold on the mask (the detector misses a
    small object on this frame), the threshold is not applied (for the answer itself; an extra
    instance the detector does not see is rightly dropped)."""
    kept = mask & (region > threshold)
    if never_empty and not kept.any():
        kept = mask
    if component_ratio <= 0 or not kept.any():
        return kept
    count, labels, stats, _ = cv2.connectedComponentsWithStats(kept.view(np.uint8), connectivity=8)
    peaks = np.zeros(count)
    for k in range(1, count):  # the largest map value inside each component, within its box
        x, y, w, h = stats[k, :4]
        box = labels[y:y + h, x:x + w] == k
        peaks[k] = region[y:y + h, x:x + w][box].max()
    return kept & np.isin(labels, np.flatnonzero(peaks >= component_ratio * peaks.max())) & (labels > 0)
