"""Geometry ranker: which of the gated candidates a size or position query asks for. Not in the paper.

"The smallest tool" names a category only through the picture: the LLM reads an 8x8-patch tower at
128 px and picks the largest or the smallest tool about as often (keyword top-1 0.39 on size
queries). The category detector's patch map of each candidate says how large it is and where it
lies. The ranker re-scores the gated top-k categories of one [SEG]:

    score(c) = log g(c) + w(h) . f(c),    w(h) = W (h - mean) / std

h is the [SEG]'s last hidden state (what the LLM understood of the query), f(c) the candidate's
geometry relative to the other plausible candidates (those holding at least `plausible` of the
best's belief): log area, centre x and y, and whether it is the largest, smallest, leftmost,
rightmost, topmost or bottommost of them. Candidates below `plausible` keep f = 0, so a confident
answer is never moved, and a zero W changes nothing. There is no bias term: the query has to ask for
size or place (a bias fitted on data rich in spatial queries moved uncertain answers of every kind
towards the leftmost or the topmost candidate). Fitted on generated train scenes by
`keyseg fit-ranker`, a logistic regression over the candidates (a few thousand parameters).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from keyseg_core.atomic import atomic_write_with

RANKER_FILE = "geometry_ranker.safetensors"
FEATURES = ("log_area", "x", "y", "largest", "smallest", "leftmost", "rightmost", "topmost", "bottommost")


def candidate_features(maps: torch.Tensor, probs: torch.Tensor, plausible: float) -> torch.Tensor:
    """(P, k) patch probabilities of k candidates (row-major square grid) and their (k,) gated beliefs,
    best first -> (k, len(FEATURES)) geometry of each, relative to the plausible candidates."""
    grid = int(round(maps.shape[0] ** 0.5))
    if grid * grid != maps.shape[0]:
        raise ValueError(f"geometry ranker: {maps.shape[0]} patches do not form a square grid")
    k = maps.shape[1]
    maps = maps.float().reshape(grid, grid, k)
    area = maps.sum(dim=(0, 1)) + 1e-4  # (k,)
    steps = torch.linspace(0.0, 1.0, grid, device=maps.device)
    x = (maps * steps[None, :, None]).sum(dim=(0, 1)) / area
    y = (maps * steps[:, None, None]).sum(dim=(0, 1)) / area
    ok = probs.float() >= plausible * probs.float().max()
    out = torch.zeros(k, len(FEATURES), device=maps.device)
    if int(ok.sum()) < 2:  # one plausible answer: nothing to choose between
        return out
    for j, value in enumerate((area.log(), x, y)):
        out[ok, j] = value[ok] - value[ok].mean()
    index = ok.nonzero().flatten()
    extremes = ((area, True), (area, False), (x, False), (x, True), (y, False), (y, True))  # FEATURES[3:]
    for j, (value, largest) in enumerate(extremes, 3):
        pick = value[index].argmax() if largest else value[index].argmin()
        out[index[pick], j] = 1.0
    return out


class GeometryRanker(nn.Module):
    """w(h) = W (h - mean) / std over FEATURES; `scores` re-ranks one [SEG]'s gated top-k."""

    def __init__(self, hidden_size: int, top_k: int = 5, plausible: float = 0.2) -> None:
        super().__init__()
        if top_k < 2:
            raise ValueError(f"geometry ranker: top_k {top_k} must be at least 2")
        if not 0.0 <= plausible <= 1.0:
            raise ValueError(f"geometry ranker: plausible {plausible} must be in [0, 1]")
        self.top_k, self.plausible = top_k, plausible
        self.weight = nn.Parameter(torch.zeros(hidden_size, len(FEATURES)))
        self.register_buffer("mean", torch.zeros(hidden_size))
        self.register_buffer("std", torch.ones(hidden_size))

    def feature_weights(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., d) [SEG] hidden states -> (..., F) how much each geometric feature counts for that query."""
        return ((hidden.float() - self.mean) / self.std) @ self.weight

    def scores(self, hidden: torch.Tensor, probs: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """(d,) hidden state, (k,) gated beliefs best first, (P, k) their patch maps -> (k,) scores."""
        features = candidate_features(maps, probs, self.plausible)  # (k, F)
        return probs.float().clamp(min=1e-9).log() + features @ self.feature_weights(hidden)

    def save(self, path: str | Path, measured: dict | None = None) -> None:
        """float32 tensors + settings (and what it was measured at) as metadata, written atomically."""
        tensors = {k: v.detach().float().contiguous() for k, v in self.state_dict().items()}
        meta = {"top_k": str(self.top_k), "plausible": str(self.plausible), "features": json.dumps(FEATURES),
                "measured": json.dumps(measured or {})}
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> GeometryRanker:
        path = Path(path)
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
            if tuple(json.loads(meta["features"])) != FEATURES:
                raise ValueError(f"features {meta['features']} are not this version's {list(FEATURES)}")
            ranker = cls(tensors["weight"].shape[0], int(meta["top_k"]), float(meta["plausible"]))
            ranker.load_state_dict(tensors)
        except (OSError, KeyError, ValueError, RuntimeError, SafetensorError) as err:
            raise ValueError(f"{path}: not a geometry ranker ({type(err).__name__}: {err})") from err
        return ranker.requires_grad_(False)


def fit_ranker(hidden: torch.Tensor, probs: torch.Tensor, maps: torch.Tensor, target: torch.Tensor, *,
               top_k: int = 5, plausible: float = 0.2, weight_decay: float = 3e-2, steps: int = 600,
               lr: float = 1e-2, seed: int = 0) -> GeometryRanker:
    """Fit W by full-batch Adam on the cross-entropy over each query's candidates.

    hidden (N, d) [SEG] states; probs (N, k) gated beliefs best first; maps (N, P, k) their patch maps;
    target (N,) the true candidate's position in the k, or -1 where the truth is not among them (left out)."""
    if not (hidden.shape[0] == probs.shape[0] == maps.shape[0] == target.shape[0]):
        raise ValueError("fit_ranker: hidden, probs, maps and target must have one row per query")
    keep = target >= 0
    if not bool(keep.any()):
        raise ValueError("fit_ranker: no query has its target among the candidates")
    torch.manual_seed(seed)
    ranker = GeometryRanker(hidden.shape[1], top_k, plausible)
    hidden = hidden[keep].float()
    ranker.mean.copy_(hidden.mean(0))
    ranker.std.copy_(hidden.std(0).clamp(min=1e-4))
    features = torch.stack([candidate_features(m, p, plausible) for m, p in zip(maps[keep], probs[keep])])  # (N, k, F)
    log_probs = probs[keep].float().clamp(min=1e-9).log()
    optimizer = torch.optim.Adam([ranker.weight], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        logits = log_probs + (features * ranker.feature_weights(hidden)[:, None, :]).sum(-1)
        loss = nn.functional.cross_entropy(logits, target[keep]) + weight_decay * ranker.weight.square().sum()
        loss.backward()
        optimizer.step()
    return ranker.requires_grad_(False)
