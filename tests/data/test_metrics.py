import numpy as np
import pytest
import torch

from keyseg_core.eval.metrics import IoUAccumulator, intersection_union, mask_iou


def test_hand_computed_iou_with_ignore():
    target = np.array([[1, 1, 0, 255],
                       [1, 0, 0, 255],
                       [0, 0, 0, 0]], np.uint8)
    logits = np.array([[2.0, -1.0, 0.5, 3.0],
                       [0.1, 0.0, -2.0, 3.0],
                       [-1.0, -1.0, -1.0, -1.0]])
    # prediction (>0): (0,0) (0,2) (0,3)* (1,0) (1,3)*; * are ignore pixels, not scored
    # intersection {(0,0),(1,0)} = 2; union {(0,0),(0,1),(1,0),(0,2)} = 4
    assert intersection_union(logits, target) == (2, 4)
    assert mask_iou(logits, target) == 0.5
    assert mask_iou(logits > 0, target) == 0.5  # bool masks work too
    assert mask_iou(torch.from_numpy(logits).to(torch.bfloat16), torch.from_numpy(target)) == 0.5


def test_empty_union_scores_one_and_ciou_is_pooled():
    acc = IoUAccumulator()
    a = np.zeros((2, 2), np.uint8)
    assert acc.update(np.full((2, 2), -1.0), a) == 1.0  # empty GT, empty prediction
    t = np.array([[1, 1], [1, 1]], np.uint8)
    assert acc.update(np.array([[1.0, -1.0], [-1.0, -1.0]]), t) == 0.25
    ignored = np.array([[255, 255], [0, 0]], np.uint8)
    assert acc.update(np.array([[1.0, 1.0], [-1.0, -1.0]]), ignored) == 1.0  # only ignore pixels predicted
    s = acc.summary()
    assert s["giou"] == pytest.approx((1.0 + 0.25 + 1.0) / 3)
    assert s["ciou"] == pytest.approx(1 / 4) and (s["intersection"], s["union"], s["count"]) == (1, 4, 3)


def test_merge_shape_check_and_order():
    a, b = IoUAccumulator(), IoUAccumulator()
    a.update(np.ones((2, 2)), np.ones((2, 2), np.uint8))
    b.update(np.ones((2, 2)), np.zeros((2, 2), np.uint8))
    a.merge(b)
    assert a.summary()["giou"] == 0.5 and a.summary()["ciou"] == 0.5
    with pytest.raises(ValueError, match="original resolution"):
        a.update(np.ones((2, 3)), np.ones((2, 2), np.uint8))
    with pytest.raises(RuntimeError):
        IoUAccumulator().summary()
    all_empty = IoUAccumulator()
    all_empty.update(np.zeros((2, 2)), np.zeros((2, 2), np.uint8))
    assert all_empty.summary()["ciou"] == 0.0  # LISA: 0 / (0 + 1e-10)


def test_keyword_accuracy_counts_only_items_with_a_keyword():
    from keyseg_core.eval.segmentation import KeywordAccuracy

    acc = KeywordAccuracy()
    assert acc.update("bed", ["bed", "couch"]) == 1
    assert acc.update("cup", ["bowl", "a", "b", "c", "cup", "d"]) == 5
    assert acc.update("cat", ["dog", "a", "b", "c", "d", "cat"]) == 6
    assert acc.update("key", ["dog"]) is None
    assert acc.update(None, ["dog"]) is None  # no keyword: not counted
    assert acc.summary() == {"keyword_count": 4, "keyword_top1": 0.25, "keyword_top5": 0.5}
    assert KeywordAccuracy().summary() == {}
