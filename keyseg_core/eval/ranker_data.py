"""What the geometry ranker is fitted and measured on: per query on generated scenes, the first
[SEG]'s hidden state, the gated top-k categories with their beliefs and patch maps, and the truth.

Each scene gives its own three queries and `extra` more phrasings about one target drawn by the
scene generator's own rules, the first of them a size or spatial query where the scene allows one,
so the types the ranker is for are not too rare to learn from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from keyseg_core.eval.presence import check_generated_split
from keyseg_core.modeling.geometry_ranker import GeometryRanker
from keyseg_core.scenes.generator import SPLIT_IDS, SceneConfig, make_sample
from keyseg_core.scenes.knowledge import load_knowledge
from keyseg_core.scenes.queries import make_queries

EXTRA_WEIGHTS = {"size": 0.5, "spatial": 0.5}


@dataclass
class RankerData:
    """N queries: hidden (N, d), probs (N, k) best first, maps (N, P, k), target (N,) position of the
    truth among the k or -1, types (N,) query types."""

    name: str
    hidden: torch.Tensor
    probs: torch.Tensor
    maps: torch.Tensor
    target: torch.Tensor
    types: list[str]


def collect(predictor, seed: int, split: str, scenes: int, extra: int = 2, progress: bool = True) -> RankerData:
    """Run the predictor's reasoner (its ranker off) on scenes 0..N-1 of a generated split."""
    gate = predictor.reasoner.gate
    if gate is None:
        raise ValueError("the geometry ranker needs a checkpoint with a category detector "
                         "(keyseg attach-detector), and this one has none")
    check_generated_split(split, scenes)
    top_k = min(predictor.model.config.keyword.top_k, len(gate.names))
    kb, config = load_knowledge(), SceneConfig()
    rows: dict[str, list] = defaultdict(list)
    saved, gate.ranker = gate.ranker, None
    try:
        with torch.inference_mode():
            for index in tqdm(range(scenes), desc=f"{split} scenes", disable=not progress):
                sample = make_sample(seed, split, index, config, kb)
                rng = np.random.default_rng([seed, SPLIT_IDS[split], index, 0x6E0])
                queries = list(sample.queries)
                if extra:
                    queries += make_queries(sample.scene.objects, kb, rng, test=split == "test",
                                            weights=EXTRA_WEIGHTS, n=extra)
                frame = predictor.reasoner.encode_frame(sample.scene.image)
                for query, reasoning in zip(queries, predictor.reasoner.reason_frame(frame, [q.text for q in queries])):
                    if reasoning.seg_hidden is None or len(reasoning.keyword_topk) < top_k:
                        continue
                    order = [gate.names.index(c.text) for c in reasoning.keyword_topk]
                    truth = gate.names.index(query.spec.target) if query.spec.target in gate.names else None
                    rows["hidden"].append(reasoning.seg_hidden.float().cpu())
                    rows["probs"].append(torch.tensor([c.prob for c in reasoning.keyword_topk]))
                    rows["maps"].append(reasoning.sight[:, order].float().cpu())
                    rows["target"].append(order.index(truth) if truth in order else -1)
                    rows["types"].append(query.spec.type)
    finally:
        gate.ranker = saved
    if not rows["hidden"]:
        raise ValueError(f"no query of generated {split} scenes 0-{scenes - 1} got a [SEG]")
    return RankerData(f"generated {split}, seed {seed}, scenes 0-{scenes - 1}, {len(rows['types'])} queries",
                      torch.stack(rows["hidden"]), torch.stack(rows["probs"]), torch.stack(rows["maps"]),
                      torch.tensor(rows["target"]), rows["types"])


def keyword_accuracy(data: RankerData, ranker: GeometryRanker | None) -> dict[str, float]:
    """Keyword top-1 by query type (and 'all'): the gated best candidate, or the ranker's pick."""
    if ranker is None:
        picks = torch.zeros_like(data.target)
    else:
        with torch.no_grad():
            picks = torch.stack([ranker.scores(h, p, m).argmax()
                                 for h, p, m in zip(data.hidden, data.probs, data.maps)])
    right = (picks == data.target).tolist()
    out = {}
    for name in sorted(set(data.types)) + ["all"]:
        hits = [r for r, t in zip(right, data.types) if name in ("all", t)]
        out[name] = sum(hits) / len(hits)
    return out
