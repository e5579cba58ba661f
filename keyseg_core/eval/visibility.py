"""Fit the category detector's visibility calibration on generated scenes (`keyseg attach-detector`).

The detector's raw visibility of a category is its largest patch probability (with tiles: the mean of
the frame's and the tiles'). Present objects often read 0.1-0.5 (a small object covers little of a
patch), so the gate's product with the model's belief under-weights them: an "all the <kind>" query
loses a member, a present target looks absent. A logistic fit of presence on logit(visibility) over
every (scene, category) pair of a generated split gives visibility = sigmoid(a logit(v) + b), a
monotone map (the ranking, hence the AUC over pairs, is unchanged) that reads near 1 for what is there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from keyseg_core.inference.category_gate import CategoryGate
from keyseg_core.inference.presence import roc_auc
from keyseg_core.modeling.category_detector import IDENTITY, CategoryDetector
from keyseg_core.eval.presence import check_generated_split
from keyseg_core.scenes.generator import SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge


@dataclass
class VisibilityFit:
    calibration: tuple[float, float]
    measured_on: str
    pairs_present: int
    pairs_absent: int
    auc: float  # present vs absent (scene, category) pairs; the fit does not change it
    recall_before: float  # present pairs read >= 0.5 by the raw visibility
    recall_after: float  # ... by the calibrated one
    absent_after: float  # absent pairs read >= 0.5 by the calibrated one


def raw_visibility(detector: CategoryDetector, preprocess: Callable[[np.ndarray], torch.Tensor], seed: int,
                   split: str, scenes: int, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) uncalibrated visibility of scenes 0..N-1 of a generated split (the detector's tiles as
    set) and (N, K) which categories each holds."""
    check_generated_split(split, scenes)
    saved, detector.calibration = detector.calibration, IDENTITY
    gate = CategoryGate(detector, len(detector.names))
    kb, config = load_knowledge(), SceneConfig()
    visible, present = [], torch.zeros(scenes, len(detector.names), dtype=torch.bool)
    try:
        for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
            image = make_sample(seed, split, index, config, kb).scene
            views = torch.stack([preprocess(v) for v in [image.image, *gate.tiles(image.image)]])
            sight = gate.sight(views.to(detector.patch.weight.device))
            visible.append(gate.visible(sight[0], sight[1:]))
            present[index, [detector.names.index(o.category) for o in image.objects]] = True
    finally:
        detector.calibration = saved
    return torch.stack(visible).cpu(), present


def fit_calibration(visible: torch.Tensor, present: torch.Tensor) -> tuple[float, float]:
    """(a, b) of the logistic regression of `present` on logit(`visible`), over all pairs."""
    v = visible.flatten().double().clamp(1e-6, 1 - 1e-6)
    x, y = torch.log(v / (1 - v)), present.flatten().double()
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([params], max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        value.backward()
        return value

    optimizer.step(loss)
    a, b = (float(p) for p in params.detach())
    if not a > 0:
        raise ValueError(f"visibility calibration: the fit gave a = {a:.3f} <= 0 (the detector's visibility "
                         "does not rise with presence on these scenes)")
    return a, b


def calibrate_visibility(detector: CategoryDetector, preprocess: Callable[[np.ndarray], torch.Tensor], *,
                         seed: int = 2, split: str = "val", scenes: int = 200, progress: bool = True) -> VisibilityFit:
    """Fit and set `detector.calibration` on a generated split; the fit's figures."""
    visible, present = raw_visibility(detector, preprocess, seed, split, scenes, progress)
    detector.calibration = fit_calibration(visible, present)
    after = detector.calibrated(visible)
    pos, neg = visible[present].numpy(), visible[~present].numpy()
    return VisibilityFit(detector.calibration, f"generated {split}, seed {seed}, scenes 0-{scenes - 1}",
                         int(present.sum()), int((~present).sum()), roc_auc(pos, neg), float((pos >= 0.5).mean()),
                         float((after[present] >= 0.5).float().mean()), float((after[~present] >= 0.5).float().mean()))
