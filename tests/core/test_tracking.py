"""Track ids (keyseg_core.inference.tracking), instances (keyseg_core.inference.instances) and the id-switch measurement."""

from __future__ import annotations

import numpy as np
import pytest

from keyseg_core.eval.tracking import evaluate, id_switches, switches_after_loss
from keyseg_core.inference.instances import split_instances
from keyseg_core.inference.tracking import MaskTracker, shifted


def _square(x: int, y: int, size: int = 20, shape=(120, 160)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[y:y + size, x:x + size] = True
    return mask


def test_empty_mask_has_no_instances_and_two_blobs_have_two():
    assert split_instances(np.zeros((10, 10), bool), "components") == []
    assert split_instances(np.zeros((10, 10), bool), "mask") == []
    two = _square(10, 10) | _square(100, 60, 30)
    parts = split_instances(two, "components")
    assert [p.sum() for p in parts] == [900, 400]  # largest first
    assert len(split_instances(two, "mask")) == 1
    speck = two.copy()
    speck[0, 0] = True
    assert len(split_instances(speck, "components", min_area=5)) == 2
    with pytest.raises(ValueError, match="instance mode"):
        split_instances(two, "pixels")


def test_a_moving_target_keeps_its_id():
    tracker = MaskTracker(iou_threshold=0.2, lost_frames=3)
    ids = [tracker.update([_square(10 + 3 * t, 20 + t)]) for t in range(30)]
    assert {i[0] for i in ids} == {"1"}


def test_a_new_query_or_a_lost_target_gets_a_new_id():
    tracker = MaskTracker(iou_threshold=0.2, lost_frames=3)
    assert tracker.update([_square(10, 10)]) == ["1"]
    tracker.update([])
    tracker.update([])
    assert tracker.update([_square(10, 10)]) == ["1"]  # lost for 2 frames < lost_frames: same id
    for _ in range(3):
        tracker.update([])
    assert tracker.update([_square(10, 10)]) == ["2"]  # lost for 3 frames: a new track
    tracker.reset()
    assert tracker.update([_square(10, 10)]) == ["3"]  # a new query: new id, never reused


def test_two_instances_keep_their_ids_and_a_jump_elsewhere_is_a_new_track():
    tracker = MaskTracker(iou_threshold=0.2, lost_frames=5)
    assert tracker.update([_square(10, 10), _square(100, 60)]) == ["1", "2"]
    assert tracker.update([_square(102, 61), _square(12, 11)]) == ["2", "1"]
    assert tracker.update([_square(10, 100)]) == ["3"]  # 4.4 object sizes from the nearest: beyond the gate of 4


def test_constant_motion_is_followed_when_frames_are_skipped():
    """12 px a frame on a 20 px object: plain IoU of consecutive masks is 0.25 then 0."""
    tracker = MaskTracker(iou_threshold=0.2, lost_frames=3)
    ids = [tracker.update([_square(5 + 12 * t, 40)])[0] for t in range(10)]
    assert ids[0] == ids[1] and set(ids) == {ids[0]}


def test_shifted_moves_and_clips():
    mask = _square(0, 0, 4, (8, 8))
    assert shifted(mask, 2, 3)[3:7, 2:6].all() and shifted(mask, 2, 3).sum() == 16
    assert shifted(mask, -2, 0).sum() == 8
    assert not shifted(mask, 9, 0).any()


def test_id_switches_count_changes_where_the_target_was_found():
    assert id_switches(["1", None, "1", "2", "2", None, "3"]) == 2
    lost = ["1", None, None, None, "2", "2", None, "3"]  # 3 frames missing, then 1
    assert switches_after_loss(lost, 3) == 1 and switches_after_loss(lost, 4) == 0


def test_no_id_switch_for_one_moving_target_on_generated_sequences():
    """The README's figure, on fewer sequences: true masks jittered by +-2 px, drift 2 and 6 px a
    frame, the default threshold. Sequence 111 (a thin glyph) switched ids at threshold 0.2."""
    for speed, seed in ((2.0, 108), (6.0, 100)):
        result = evaluate("truth", sequences=4, frames=60, speed=speed, stride=1, seed=seed,
                          iou_threshold=MaskTracker().iou_threshold, lost_frames=10)
        assert result.id_switches == 0 and result.ids_started == 4, result
        assert result.found >= 0.9 * result.frames


def test_the_position_gate_follows_a_mask_that_no_longer_overlaps_and_only_with_its_label():
    """A 20 px object jumps 30 px, then 30 more: no overlap even after the motion is known (the
    first jump teaches none), so only the gate on the predicted centre can keep its id; a mask of
    another keyword near there starts a new track, and gate 0 is IoU alone."""
    gated, iou_only = MaskTracker(lost_frames=3), MaskTracker(lost_frames=3, gate=0.0)
    frames = [_square(10, 40), _square(40, 40), _square(70, 40)]
    assert [gated.update([m], ["cup"])[0] for m in frames] == ["1", "1", "1"]
    assert [iou_only.update([m], ["cup"])[0] for m in frames] == ["1", "2", "3"]
    # beside where the cup would be (no overlap, 1.1 sizes off): a bowl there is a new object
    assert gated.update([_square(100, 62)], ["bowl"]) == ["2"]
    far = MaskTracker(lost_frames=3)
    far.update([_square(10, 40)])
    assert far.update([_square(100, 90)]) == ["2"]  # 5 object sizes away, beyond the gate of 4: a new object
    with pytest.raises(ValueError, match="labels"):
        far.update([_square(10, 40)], ["a", "b"])
    with pytest.raises(ValueError, match="gate"):
        MaskTracker(gate=-1.0)


def test_slivers_of_the_object_do_not_shrink_the_gate():
    """A segmenter that finds only a 4 px sliver of a 20 px object, on one corner and then on the
    opposite one: the slivers lie 4 sliver sizes apart, but under one object size, so the id stays;
    measured by the last mask's area, the gate would have started a new track."""
    tracker = MaskTracker(lost_frames=3)
    for t in range(4):
        assert tracker.update([_square(10 + 10 * t, 40)], ["cup"]) == ["1"]
    assert tracker.update([_square(50, 40, size=4)], ["cup"]) == ["1"]  # top-left corner
    assert tracker.update([_square(76, 56, size=4)], ["cup"]) == ["1"]  # bottom-right, 26 px on
    assert tracker.update([_square(75, 40)], ["cup"]) == ["1"]  # the whole object again
    with pytest.raises(ValueError, match="smoothing"):
        MaskTracker(smoothing=0.0)


def test_a_target_back_where_it_was_lost_keeps_its_id_whatever_its_motion_said():
    """Motion read off a sliver, extrapolated over 20 missed frames, puts the track 6 object sizes
    away; the object comes back where it was last seen."""
    tracker = MaskTracker()  # gate 4, lost_frames 30
    assert tracker.update([_square(10, 40)], ["cup"]) == ["1"]
    assert tracker.update([_square(26, 56, size=4)], ["cup"]) == ["1"]
    for _ in range(20):
        tracker.update([])
    assert tracker.update([_square(12, 42)], ["cup"]) == ["1"]


def test_no_id_switch_at_eighteen_pixels_between_fed_frames():
    """The README's hardest row on true masks (drift 6 px a frame, every third frame fed), on fewer
    sequences: IoU alone switched ids there (66 in 20 sequences), the position gate does not."""
    gated = evaluate("truth", sequences=4, frames=60, speed=6.0, stride=3, seed=112,
                     iou_threshold=0.1, lost_frames=10)
    assert gated.id_switches == 0 and gated.ids_started == 4, gated
    iou_only = evaluate("truth", sequences=4, frames=60, speed=6.0, stride=3, seed=112,
                        iou_threshold=0.1, lost_frames=10, gate=0.0)
    assert iou_only.id_switches > 0  # what the gate fixes, on the same sequences
