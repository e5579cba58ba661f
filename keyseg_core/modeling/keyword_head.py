"""Keyword head and loss of KeySeg (paper section 3.4): L_kw = CE((W_k K) . E^T / tau, y).

E is the LLM's vocabulary embedding table (V x d). Its rows for ordinary tokens are frozen in KeySeg
(only the new special-token rows train), so the head reads it without taking gradients through it.

Multi-token keywords ("swim cap" -> [" swim", " cap"]): one [KEY] embedding yields one distribution
over the vocabulary, so y is the keyword's set of sub-tokens and the loss is the mean of the
per-sub-token cross-entropies, -1/n sum_i log p(t_i) (= cross-entropy against a target spread
uniformly over the sub-tokens). A one-token keyword reduces to the paper's plain CE. Decoding scores
each candidate keyword by the same quantity, so training and decoding agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class KeywordCandidate:
    """One keyword hypothesis decoded from the [KEY] embedding, with its probability."""

    text: str
    prob: float


class KeywordHead(nn.Module):
    """W_k and the temperature; logits against an embedding table passed in at call time."""

    def __init__(self, hidden_size: int, tau: float) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, hidden_size)  # W_k
        self.tau = tau

    def forward(self, key: torch.Tensor, vocab_embeddings: torch.Tensor) -> torch.Tensor:
        """(N_key, d) [KEY] embeddings, (V, d) table -> (N_key, V) logits."""
        projected = self.proj(key)
        with whole_table(vocab_embeddings) as table:
            return projected @ table.to(projected.dtype).T / self.tau


@contextlib.contextmanager
def whole_table(weight: torch.Tensor) -> Iterator[torch.Tensor]:
    """The embedding table in full, detached. The head reads it outside the embedding's own forward,
    where DeepSpeed ZeRO-3 keeps only this rank's partition (an empty tensor): gather it for the read
    and keep a copy for the backward of the logits."""
    if not hasattr(weight, "ds_id"):  # not partitioned by ZeRO-3
        yield weight.detach()
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters([weight], modifier_rank=None):
        yield weight.detach().clone()


def keyword_loss(logits: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
    """Mean over [KEY]s of the mean sub-token cross-entropy.

    Args:
        logits: (N_key, V) keyword logits.
        targets: for each [KEY], the token ids of its keyword (non-empty; duplicates count once).
    """
    if logits.shape[0] != len(targets):
        raise ValueError(f"keyword_loss: {logits.shape[0]} [KEY] logits but {len(targets)} targets")
    if not targets:
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits.float(), dim=-1)
    losses = []
    for row, ids in zip(log_probs, targets):
        unique = sorted(set(ids))
        if not unique:
            raise ValueError("keyword_loss: a [KEY] has an empty keyword target")
        losses.append(-row[unique].mean())
    return torch.stack(losses).mean()


def decode_keywords(
    logits: torch.Tensor, candidates: list[str], candidate_ids: list[list[int]], top_k: int
) -> list[KeywordCandidate]:
    """Rank candidate keywords for one [KEY] by mean sub-token log-probability.

    Probabilities are a softmax over the candidates' scores, so they sum to 1 over the candidate list.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    scores = torch.stack([log_probs[sorted(set(ids))].mean() for ids in candidate_ids])
    probs = torch.softmax(scores, dim=0)
    order = torch.argsort(probs, descending=True)[:top_k]
    return [KeywordCandidate(candidates[i], float(probs[i])) for i in order.tolist()]
