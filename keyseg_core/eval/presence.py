"""Measure "not here": present and absent queries on generated scenes, a threshold calibrated on one
split, its false positives and misses on another.

Each scene gives two queries on the same image: its own first query (the target is there) and one
about a category the scene does not hold, worded by the same templates (`absent_query`). The model
runs without a presence decision; the signals of both answers (keyseg_core.inference.presence) are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from keyseg_core.eval.metrics import mask_iou
from keyseg_core.inference.presence import (SIGNALS, PresenceCalibration, calibrate, rates, roc_auc, signals,
                                  threshold_for_miss)
from keyseg_core.scenes.eval_queries import absent_query
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge

@dataclass
class SplitSignals:
    """Presence signals of N present and N absent queries, and how often an absent one still got a
    keyword that names something in the scene."""

    name: str  # "generated test, seed 3, scenes 0-199"
    present: dict[str, np.ndarray]
    absent: dict[str, np.ndarray]
    present_iou: np.ndarray  # IoU of each present query's mask with its target

    def auc(self) -> dict[str, float]:
        return {s: roc_auc(self.present[s], self.absent[s]) for s in self.present}


def absent_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The absent query's draw for one scene: a function of (seed, split, index) only."""
    return np.random.default_rng([seed, SPLIT_IDS[split], index, 0xAB5E])


def check_generated_split(split: str, scenes: int) -> None:
    """Refuse, by name, a split the generator has no code for or an empty range of scenes."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split: '{split}' is not one of {', '.join(SPLIT_IDS)}")
    if scenes < 1:
        raise ValueError(f"scenes: {scenes} must be >= 1")


def answered_pairs(predictor, seed: int, split: str, scenes: int, progress: bool = True):
    """Per scene 0..N-1 of a generated split: (sample, the answer to its own first query, the answer
    to an absent-object query on the same image), as the predictor stands."""
    check_generated_split(split, scenes)
    kb, config = load_knowledge(), SceneConfig()
    for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
        sample = make_sample(seed, split, index, config, kb)
        query = absent_query(sample.scene.objects, kb, absent_rng(seed, split, index), test=split == "test")
        here, gone = predictor.predict_batch([sample.scene.image] * 2, [sample.queries[0].text, query.text])
        yield sample, here, gone


def collect(predictor, seed: int, split: str, scenes: int, progress: bool = True) -> SplitSignals:
    """Run the predictor (its presence decision off) on scenes 0..N-1 of a generated split."""
    saved, predictor.presence = predictor.presence, None
    present = {s: [] for s in SIGNALS}
    absent = {s: [] for s in SIGNALS}
    ious = []
    try:
        for sample, here, gone in answered_pairs(predictor, seed, split, scenes, progress):
            for name, value in signals(here).items():
                present[name].append(value)
            for name, value in signals(gone).items():
                absent[name].append(value)  # 'category' only with a category gate: empty lists are dropped
            ious.append(mask_iou(here.mask, sample.target_mask))
    finally:
        predictor.presence = saved
    return SplitSignals(f"generated {split}, seed {seed}, scenes 0-{scenes - 1}",
                        {s: np.array(v) for s, v in present.items() if v}, {s: np.array(v) for s, v in absent.items() if v},
                        np.array(ious))


def presence_report(calibration_split: SplitSignals, test_split: SplitSignals, max_miss: float
                    ) -> tuple[PresenceCalibration, dict]:
    """Calibrate on one split, measure on the other: (the calibration, a JSON-able report)."""
    chosen = calibrate(calibration_split.present, calibration_split.absent, max_miss, calibration_split.name)
    miss, fp = rates(test_split.present[chosen.signal], test_split.absent[chosen.signal], chosen.threshold)
    test_auc, calibration_auc = test_split.auc(), calibration_split.auc()
    per_signal = {}
    for name in calibration_split.present:
        t = threshold_for_miss(calibration_split.present[name], max_miss)
        m, f = rates(test_split.present[name], test_split.absent[name], t)
        per_signal[name] = {"threshold": t, "test_miss_rate": m, "test_false_positive_rate": f,
                            "test_auc": test_auc[name], "calibration_auc": calibration_auc[name]}
    report = {
        "calibrated_on": calibration_split.name, "measured_on": test_split.name, "max_miss": max_miss,
        "signal": chosen.signal, "threshold": chosen.threshold,
        "test_miss_rate": miss, "test_false_positive_rate": fp, "test_auc": test_auc[chosen.signal],
        "calibration_miss_rate": chosen.miss_rate, "calibration_false_positive_rate": chosen.false_positive_rate,
        "present_target_miou": float(test_split.present_iou.mean()),
        "targets": {"false_positive_rate": 0.05, "miss_rate": 0.05},
        "signals": per_signal,
    }
    return chosen, report


def decision_report(predictor, seed: int, split: str, scenes: int, progress: bool = True) -> dict:
    """The predictor's "not here" decision as it stands (its own presence calibration, if any) on
    scenes 0..N-1 of a generated split: how often an absent-object query still gets a mask (false
    positives) and a present target is called absent (misses)."""
    missed = answered = 0
    for _, here, gone in answered_pairs(predictor, seed, split, scenes, progress):
        missed += not here.present
        answered += gone.present
    calibration = predictor.presence
    return {"measured_on": f"generated {split}, seed {seed}, scenes 0-{scenes - 1}",
            "calibration": None if calibration is None else {"signal": calibration.signal,
                                                             "threshold": calibration.threshold},
            "false_positive_rate": answered / scenes, "miss_rate": missed / scenes,
            "targets": {"false_positive_rate": 0.05, "miss_rate": 0.05}}
