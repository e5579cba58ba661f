"""Keyword head and loss against hand-computed values."""

import math

import pytest
import torch

from keyseg_core.modeling.keyword_head import KeywordHead, decode_keywords, keyword_loss


def test_head_is_scaled_dot_product_with_vocab_table():
    head = KeywordHead(2, tau=0.5)
    with torch.no_grad():
        head.proj.weight.copy_(torch.eye(2))
        head.proj.bias.zero_()
    vocab = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    logits = head(torch.tensor([[2.0, 1.0]]), vocab)
    torch.testing.assert_close(logits, torch.tensor([[4.0, 2.0, 6.0]]))  # (K . E^T) / tau


def test_loss_single_token_hand_computed():
    logits = torch.tensor([[4.0, 2.0, 6.0]])
    z = math.exp(4) + math.exp(2) + math.exp(6)
    want = -math.log(math.exp(4) / z)
    assert keyword_loss(logits, [[0]]).item() == pytest.approx(want, rel=1e-6)


def test_loss_multi_token_is_mean_of_subtoken_ce():
    logits = torch.tensor([[4.0, 2.0, 6.0], [0.0, 0.0, 0.0]])
    z = math.exp(4) + math.exp(2) + math.exp(6)
    first = -(math.log(math.exp(2) / z) + math.log(math.exp(6) / z)) / 2  # "swim cap" -> tokens 1, 2
    second = math.log(3)  # uniform logits, any token
    got = keyword_loss(logits, [[1, 2], [0]]).item()
    assert got == pytest.approx((first + second) / 2, rel=1e-6)
    # repeated sub-tokens count once
    assert keyword_loss(logits[:1], [[1, 2, 2]]).item() == pytest.approx(first, rel=1e-6)


def test_loss_rejects_mismatch_and_empty():
    with pytest.raises(ValueError, match="targets"):
        keyword_loss(torch.zeros(2, 3), [[0]])
    with pytest.raises(ValueError, match="empty"):
        keyword_loss(torch.zeros(1, 3), [[]])


def test_decode_ranks_candidates_by_mean_log_prob():
    logits = torch.tensor([5.0, 0.0, 3.0, 1.0])
    top = decode_keywords(logits, ["a", "bc", "d"], [[0], [1, 2], [3]], top_k=3)
    assert [c.text for c in top] == ["a", "bc", "d"]
    assert sum(c.prob for c in top) == pytest.approx(1.0)
    lp = torch.log_softmax(logits, 0)
    scores = torch.stack([lp[0], (lp[1] + lp[2]) / 2, lp[3]])
    assert top[1].prob == pytest.approx(torch.softmax(scores, 0)[1].item(), rel=1e-6)
