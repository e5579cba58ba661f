"""Is the asked-for object in view at all? A calibrated threshold on a signal of the predicted mask.

The paper always answers with a mask; a robot asked for a cup that is not there must hear "not
here" instead of a keyword over a mask of something else. SAM trained with absent-category prompts
(stage 1's `prompts.absent`) answers such prompts with little or no mask, so the mask itself carries
the presence signal. `calibrate` picks the signal and threshold that keep misses of present targets
under a chosen rate on one split (val); `keyseg eval-presence` measures them on another (test) and
writes the result next to the checkpoint as `presence.json`, which the predictor then applies.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from keyseg_core.atomic import atomic_write_text
from keyseg_core.inference.results import Prediction

PRESENCE_FILE = "presence.json"
SIGNALS = ("area", "score", "mass", "category")


def signals(prediction: Prediction) -> dict[str, float]:
    """Presence signals of one prediction: the mask's share of the image ('area'), the mean foreground
    probability inside it ('score', 0 for an empty mask), their product ('mass'), and with a category
    gate the share of the model's belief that falls on categories in view ('category')."""
    area = float(prediction.mask.mean()) if prediction.mask.size else 0.0
    out = {"area": area, "score": float(prediction.score), "mass": area * float(prediction.score)}
    if prediction.category_mass is not None:
        out["category"] = float(prediction.category_mass)
    return out


def roc_auc(present: np.ndarray, absent: np.ndarray) -> float:
    """Probability that a present target's signal exceeds an absent one's (ties count half)."""
    if not len(present) or not len(absent):
        return float("nan")
    p, a = np.asarray(present, float)[:, None], np.asarray(absent, float)[None, :]
    return float((p > a).mean() + 0.5 * (p == a).mean())


def threshold_for_miss(present: np.ndarray, max_miss: float) -> float:
    """The largest threshold t with at most `max_miss` of present signals <= t (present means signal > t).

    Just below a value, t steps down by a relative 1e-9 (not to the next float: a denormal there
    reads as 0 where the CPU flushes denormals, and would count that value as a miss)."""
    values = np.sort(np.asarray(present, float))
    if not len(values):
        return 0.0
    k = int(np.floor(max_miss * len(values)))  # this many present targets may fall at or below t
    if k >= len(values):
        return float(values[-1])
    if k > 0 and values[k - 1] < values[k]:
        return float(values[k - 1])
    return float(values[k] - 1e-9 * max(1.0, abs(values[k])))


@dataclass(frozen=True)
class PresenceCalibration:
    """'Present' means signals(prediction)[signal] > threshold; the rest records where it came from."""

    signal: str
    threshold: float
    max_miss: float
    measured_on: str  # e.g. "generated val, seed 2, scenes 0-199"
    miss_rate: float  # on measured_on
    false_positive_rate: float  # on measured_on
    auc: float

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"presence signal: '{self.signal}' is not one of {', '.join(SIGNALS)}")
        if not 0.0 <= self.max_miss < 1.0:
            raise ValueError(f"presence max_miss: {self.max_miss} must be in [0, 1)")

    def present(self, prediction: Prediction) -> bool:
        values = signals(prediction)
        if self.signal not in values:
            raise ValueError(f"presence calibration: signal '{self.signal}' needs the category gate, which "
                             "this predictor runs without")
        return values[self.signal] > self.threshold

    def save(self, path: str | Path) -> None:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> PresenceCalibration:
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**raw)
        except (OSError, json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a presence calibration ({err})") from err


def rates(present: np.ndarray, absent: np.ndarray, threshold: float) -> tuple[float, float]:
    """(miss rate of present targets, false-positive rate of absent ones) at a threshold."""
    miss = float((np.asarray(present) <= threshold).mean()) if len(present) else float("nan")
    fp = float((np.asarray(absent) > threshold).mean()) if len(absent) else float("nan")
    return miss, fp


def calibrate(present: dict[str, np.ndarray], absent: dict[str, np.ndarray], max_miss: float,
              measured_on: str) -> PresenceCalibration:
    """The signal with the fewest false positives at <= max_miss misses (ties: higher AUC), and its threshold,
    among the signals both splits have."""
    rows = []
    for name in [s for s in SIGNALS if len(present.get(s, ())) and len(absent.get(s, ()))]:
        t = threshold_for_miss(present[name], max_miss)
        miss, fp = rates(present[name], absent[name], t)
        rows.append(PresenceCalibration(name, t, max_miss, measured_on, miss, fp,
                                        roc_auc(present[name], absent[name])))
    return min(rows, key=lambda r: (r.false_positive_rate, -r.auc))


def not_here(prediction: Prediction) -> Prediction:
    """The prediction as a robot should receive it when the object is not in view: no mask, no box, no
    keyword (a keyword names a target; there is none), and an answer that says what was not found.
    `keyword_topk` keeps the model's candidates for inspection; `present` is False."""
    looked_for = prediction.keyword
    prediction.mask = np.zeros_like(prediction.mask)
    prediction.box = None
    prediction.score = 0.0
    prediction.keyword, prediction.keyword_prob = "", 0.0
    prediction.present = False
    prediction.instances = []
    prediction.answer = f"I don't see the {looked_for} here." if looked_for else "I don't see it here."
    return prediction
