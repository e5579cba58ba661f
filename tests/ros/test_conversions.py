"""Conversions, overlay, query and parameter checks in-process (the node tests cover them over DDS)."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402


@pytest.fixture(scope="module")
def conv(ros_install):
    from keyseg_ros.node import conversions

    return conversions


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_every_encoding_decodes_to_the_same_rgb(conv, encoding):
    expected = conv.image_to_rgb(h.make_image(9, 5, "rgb8"), 64)
    rgb = conv.image_to_rgb(h.make_image(9, 5, encoding, pad=3), 64)
    assert rgb.shape == (5, 9, 3) and rgb.dtype == np.uint8
    # make_image writes the same bytes (x gradient, y gradient, 128) whatever the channel order
    if encoding == "mono8":
        assert (rgb == expected[:, :, :1]).all()
    elif encoding.startswith("bgr"):
        assert (rgb == expected[:, :, ::-1]).all()
    else:
        assert (rgb == expected).all()


@pytest.mark.parametrize("mutate, message", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding 'yuv422'"),
    (lambda m: setattr(m, "data", m.data[:10]), "fewer than step*height"),
    (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
    (lambda m: setattr(m, "width", 0), "zero-size"),
    (lambda m: setattr(m, "height", 100), "larger than max_image_size=64"),
])
def test_bad_images_are_refused_with_the_reason(conv, mutate, message):
    msg = h.make_image(9, 5)
    mutate(msg)
    with pytest.raises(conv.BadImageError, match=re.escape(message)):
        conv.image_to_rgb(msg, 64)


def test_mask_result_and_box(conv):
    from keyseg_core.inference.results import Prediction, mask_box
    from keyseg_core.modeling.keyword_head import KeywordCandidate

    frame = h.make_image(12, 8)
    mask = np.zeros((8, 12), bool)
    mask[2:5, 3:9] = True
    mask_msg = conv.mask_to_image(mask, frame.header)
    assert (mask_msg.encoding, mask_msg.step, mask_msg.header) == ("mono8", 12, frame.header)
    assert (np.frombuffer(mask_msg.data, np.uint8).reshape(8, 12) == mask * 255).all()
    pred = Prediction(mask=mask, score=0.7, keyword="mug", keyword_prob=0.5,
                      keyword_topk=[KeywordCandidate("mug", 0.5), KeywordCandidate("cup", 0.2)],
                      answer="It is the mug.", box=mask_box(mask), timings_ms={"total": 3.0})
    result = conv.to_result(pred, header=frame.header, query="q", mask=mask_msg, model="m",
                            node_timings_ms={"decode_image": 0.1})
    assert (result.box.x_offset, result.box.y_offset, result.box.width, result.box.height) == (3, 2, 6, 3)
    assert result.has_box and [c.text for c in result.keyword_topk] == ["mug", "cup"]
    assert {t.stage: t.ms for t in result.timings} == pytest.approx({"total": 3.0, "decode_image": 0.1})
    empty = conv.to_result(Prediction(mask=mask & False, score=0.0, keyword="", keyword_prob=0.0,
                                      keyword_topk=[], answer="", box=None),
                           header=frame.header, query="q", mask=mask_msg, model="m", node_timings_ms={})
    assert not empty.has_box and empty.box.width == 0
    assert result.present and empty.present  # a prediction that was not judged absent
    from keyseg_core.inference.presence import not_here

    gone = conv.to_result(not_here(pred), header=frame.header, query="q", mask=conv.mask_to_image(pred.mask, frame.header),
                          model="m", node_timings_ms={})
    assert not gone.present and gone.keyword == "" and not gone.has_box and gone.answer == "I don't see the mug here."


def test_overlay_changes_only_the_mask_and_the_label(ros_install):
    from keyseg_core.inference.overlay import overlay as draw_overlay

    rgb = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[30:50, 40:70] = True
    out = draw_overlay(rgb, mask, "")
    assert out.shape == rgb.shape and (out[~mask] == 100).all() and (out[mask] != 100).any()
    assert (out[40, 55] == (100 >> 1) + np.array([255, 64, 32]) // 2).all()  # interior: 50 % tint
    labelled = draw_overlay(rgb, mask, "mug (0.70)")
    assert (labelled[:30] != 100).any() and (rgb == 100).all()  # label above the mask; input untouched
    assert (draw_overlay(rgb, mask & False, "") == rgb).all()


def test_query_checks(ros_install):
    from keyseg_ros.node.conversions import query_problem

    assert query_problem("the red cup", 20) is None
    assert "empty" in query_problem(" \n", 20)
    assert "UTF-8" in query_problem("bad \ufffd bytes", 20)
    assert "max_query_length=5" in query_problem("too long", 5)


def test_parameter_table_validates_by_name(ros_install):
    from keyseg_ros.node.params import PARAMS, validation_error

    for spec in PARAMS:
        assert validation_error(spec.name, spec.default) is None, spec.name
        assert spec.description
    assert "'device'" in validation_error("device", "tpu")
    assert validation_error("device", "cuda:1") is None
    assert "'max_rate'" in validation_error("max_rate", float("nan"))
    assert validation_error("use_sim_time", True) is None
