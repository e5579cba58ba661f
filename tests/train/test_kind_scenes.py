"""Generated "all the <kind>" training samples (keyseg_core/train/stage2/kind_scenes.py) and the prompt
anchors' target shared among several categories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keyseg_core.scenes.knowledge import load_knowledge
from keyseg_core.train.stage2.anchors import PromptAnchors
from keyseg_core.train.stage2.config import DataSource
from keyseg_core.train.stage2.kind_scenes import KindScenes


def test_a_kind_sample_is_every_object_of_its_kind_and_a_function_of_its_index():
    kb = load_knowledge()
    data = KindScenes("train", length=3, seed=11)
    first = data[1]
    assert len(first.targets) >= 2 and all(kb.has_kind(c, first.keyword) for c in first.targets)
    assert first.mask.dtype == np.uint8 and set(np.unique(first.mask)) <= {0, 1}
    assert first.image.shape[:2] == first.mask.shape and first.query_type == "all"
    again = KindScenes("train", length=3, seed=11)[1]
    assert again.queries == first.queries and np.array_equal(again.mask, first.mask)
    assert np.array_equal(again.image, first.image)
    other = KindScenes("train", length=3, seed=12)[1]
    assert not np.array_equal(other.image, first.image)
    with pytest.raises(IndexError, match="index 3 outside 0-2"):
        data[3]


def test_kind_scenes_refuse_the_test_split_and_bad_options():
    with pytest.raises(ValueError, match="split: 'test' must be train or val"):
        KindScenes("test")
    with pytest.raises(ValueError, match="options.length: 0 must be an integer >= 1"):
        KindScenes("train", length=0)
    with pytest.raises(ValueError, match="keyword / questions"):
        DataSource(name="scenes-all", keyword="optional")
    with pytest.raises(ValueError, match="root: data set 'reasonseg' needs its data root"):
        DataSource(name="reasonseg")


def test_several_categories_share_the_anchor_target():
    table = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    anchors = PromptAnchors(table, ["cup", "bed", "lamp"])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    seg_batch = torch.tensor([0, 1])
    shared = anchors.loss(torch.zeros(2, 2), seg_batch, [("cup", "bed"), "lamp"], logits)
    log_p = logits.log_softmax(-1)
    expected = (-(log_p[0, 0] + log_p[0, 1]) / 2 - log_p[1, 2]) / 2
    assert shared.item() == pytest.approx(expected.item())
    # regressed S_hat (no codebook): the anchor of several is their prompts' mean
    mean = torch.tensor([[0.5, 0.5]])
    assert anchors.loss(mean, torch.tensor([0]), [("cup", "bed")]).item() == 0.0
