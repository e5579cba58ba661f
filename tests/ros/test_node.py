"""keyseg_node as its own process with the real tiny predictor: outputs, service, bad input.

One node serves the whole module (model load costs seconds); every test leaves it serving, and
each bad-input test ends by showing the node still answers a good frame.
"""

from __future__ import annotations

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402

MAX_IMAGE_SIZE = 2048  # overridden on the command line, so the oversized case stays small


@pytest.fixture(scope="module")
def node(probe, workdir, ros_install):
    ns = h.unique_namespace()
    params = ros_install / "share" / "keyseg_ros" / "config" / "keyseg.yaml"
    proc = h.Process.start("keyseg_node", [
        "--ros-args", "-r", f"__ns:={ns}", "--params-file", str(params),
        "-p", "model:=config:tiny", "-p", f"max_image_size:={MAX_IMAGE_SIZE}",
        "-p", "diagnostics_period:=0.3"], workdir)
    session = h.Session(probe, proc, ns)
    h.wait_until(lambda: session.image.get_subscription_count() > 0
                 and session.query.get_subscription_count() > 0, 60, "keyseg_node to subscribe", proc)
    yield session
    proc.assert_clean_stop()


def test_frames_before_any_query_are_counted_not_answered(node):
    from std_msgs.msg import Empty

    node.clear.publish(Empty())
    h.wait_until(lambda: node.stats().get("query") == "", 10, "the query to be cleared", node.proc)
    before = node.count("frames_without_query")
    stamps = []

    def frame():
        msg = h.make_image(32, 24)
        stamps.append(msg.header.stamp.sec)
        return msg

    node.wait_count_above("frames_without_query", before, (node.image, frame))
    assert node.results.find(lambda r: r.header.stamp.sec in stamps) is None
    node.answer("the blue mug")  # a query afterwards is served


def test_mask_keyword_result_and_overlay_match_the_frame(node):
    frame, result = node.answer("the cup I can drink from", lambda: h.make_image(640, 480))
    stamp = frame.header.stamp.sec
    h.wait_until(lambda: node.masks.find(lambda m: m.header.stamp.sec == stamp) is not None
                 and node.overlays.find(lambda m: m.header.stamp.sec == stamp) is not None,
                 10, "mask and overlay of the frame", node.proc)
    mask = node.masks.find(lambda m: m.header.stamp.sec == stamp)
    assert (mask.width, mask.height, mask.encoding, mask.step) == (640, 480, "mono8", 640)
    assert mask.header == frame.header
    assert set(np.unique(np.frombuffer(mask.data, np.uint8))) <= {0, 255}
    overlay = node.overlays.find(lambda m: m.header.stamp.sec == stamp)
    assert (overlay.width, overlay.height, overlay.encoding) == (640, 480, "rgb8")
    assert len(overlay.data) == 640 * 480 * 3

    assert result.header == frame.header
    assert result.mask.header == frame.header and (result.mask.width, result.mask.height) == (640, 480)
    assert result.keyword and result.keyword == result.keyword_topk[0].text
    assert all(0.0 <= c.prob <= 1.0 for c in result.keyword_topk)
    assert result.answer
    assert 0.0 <= result.confidence <= 1.0
    assert result.model == "config:tiny" and result.untrained
    stages = {t.stage for t in result.timings}
    assert {"total", "preprocess", "mask_decoder", "decode_image", "queue_wait"} <= stages
    if result.has_box:
        box = result.box
        assert box.x_offset + box.width <= 640 and box.y_offset + box.height <= 480
    h.wait_until(lambda: node.keywords.find(lambda k: k.header.stamp.sec == stamp) is not None, 10,
                 "the stamped keyword of the frame", node.proc)
    keyword = node.keywords.find(lambda k: k.header.stamp.sec == stamp)
    assert keyword.header == frame.header and keyword.keyword == result.keyword
    assert keyword.query == "the cup I can drink from" and keyword.probability == pytest.approx(result.keyword_prob)


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8", "mono8"])
def test_other_encodings_and_padded_rows(node, encoding):
    frame, result = node.answer(f"the {encoding} object",
                                lambda: h.make_image(50, 30, encoding, pad=6))
    assert (result.mask.width, result.mask.height) == (50, 30)
    assert result.mask.header == frame.header


def test_service_answers_one_shot_requests(node):
    from keyseg_ros.srv import Segment

    request = Segment.Request(image=h.make_image(96, 64, "bgr8"), query="the left robot arm")
    response = node.probe.call(Segment, f"{node.ns}/segment", request)
    assert response.success, response.message
    assert response.result.query == "the left robot arm"
    assert (response.result.mask.width, response.result.mask.height) == (96, 64)
    assert response.result.header == request.image.header and response.result.keyword

    bad = Segment.Request(image=h.make_image(8, 8, "yuv422"), query="anything")
    response = node.probe.call(Segment, f"{node.ns}/segment", bad)
    assert not response.success and "yuv422" in response.message
    response = node.probe.call(Segment, f"{node.ns}/segment",
                               Segment.Request(image=h.make_image(8, 8), query="  "))
    assert not response.success and "empty" in response.message


def test_service_answers_several_queries_on_one_image(node):
    from keyseg_ros.srv import Segment

    request = Segment.Request(image=h.make_image(96, 64), query="the cup", queries=["the mug", "the plate"])
    response = node.probe.call(Segment, f"{node.ns}/segment", request)
    assert response.success, response.message
    assert [r.query for r in response.results] == ["the cup", "the mug", "the plate"]
    assert response.result == response.results[0]
    assert all((r.mask.width, r.mask.height) == (96, 64) and r.reasoning_fresh for r in response.results)
    only_list = Segment.Request(image=h.make_image(32, 24), queries=["a", "b"])
    response = node.probe.call(Segment, f"{node.ns}/segment", only_list)
    assert response.success and [r.query for r in response.results] == ["a", "b"]
    bad = Segment.Request(image=h.make_image(32, 24), query="fine", queries=[" "])
    response = node.probe.call(Segment, f"{node.ns}/segment", bad)
    assert not response.success and response.message.startswith("query 2 of 2: empty")


def test_streaming_reasons_once_per_query_and_segments_every_frame(node):
    """The default mode: one reasoning pass for a new query, then SAM only on every frame, each
    result saying how old its reasoning is; a message on `reason` asks for a new pass."""
    from std_msgs.msg import Empty

    query = "the streamed cup"
    node.answer(query)
    reasonings = node.settled_count("reasonings")  # includes the pass that answered above
    sent = []

    def frame():
        msg = h.make_image(64, 48)
        sent.append(msg.header.stamp.sec)
        return msg

    def streamed():
        return [r for r in node.results.msgs if r.query == query and r.header.stamp.sec in sent]

    h.publish_until(node.image, frame, lambda: len(streamed()) >= 8, 30, "8 streamed results", node.proc)
    results = streamed()
    assert not any(r.reasoning_fresh for r in results)
    ages = [r.reasoning_age for r in results]
    assert all(a > 0 for a in ages) and ages == sorted(ages)
    # Measured between header stamps (whole seconds apart here), not arrival times (0.25 s apart):
    # right under bag replay and sim time.
    for a, b in zip(results, results[1:]):
        assert b.reasoning_age - a.reasoning_age == pytest.approx(b.header.stamp.sec - a.header.stamp.sec)
    assert node.settled_count("reasonings") == reasonings  # no LLM pass for these frames
    reason = node.probe.publisher(Empty, f"{node.ns}/reason", 10)
    h.wait_until(lambda: reason.get_subscription_count() > 0, 10, "the reason subscription", node.proc)
    reason.publish(Empty())
    node.wait_count_above("reasonings", reasonings, (node.image, frame))


def _short_data():
    msg = h.make_image(40, 30)
    msg.data = msg.data[: len(msg.data) // 2]
    return msg


def _zero_size():
    msg = h.make_image(40, 30)
    msg.width = msg.height = msg.step = 0
    return msg


def _small_step():
    msg = h.make_image(40, 30)
    msg.step = 40
    return msg


BAD_FRAMES = {
    "unknown encoding": lambda: h.make_image(40, 30, "yuv422"),
    "16-bit encoding": lambda: h.make_image(40, 30, "16UC1"),
    "data shorter than step*height": _short_data,
    "step smaller than a row": _small_step,
    "zero size": _zero_size,
    "oversized": lambda: h.make_image(MAX_IMAGE_SIZE + 8, 4),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames_are_refused_and_the_node_keeps_serving(node, case):
    query = f"query before {case}"
    node.answer(query)
    before = node.count("bad_frames")
    node.wait_count_above("bad_frames", before, (node.image, BAD_FRAMES[case]))
    assert node.stats()["last_problem"].startswith("bad_frames")
    node.answer(query)


def _invalid_utf8(node):
    """Raw CDR of a std_msgs/String whose bytes are not UTF-8 (what a C++ node could send)."""
    from rclpy.serialization import serialize_message
    from std_msgs.msg import String

    raw = bytearray(serialize_message(String(data="abcd")))
    raw[8:12] = b"\xff\xfe\xc3\x28"
    node.query.publish(bytes(raw))


BAD_QUERIES = {
    "empty": lambda node: node.send_query(""),
    "whitespace only": lambda node: node.send_query(" \t\n "),
    "too long": lambda node: node.send_query("the cup " * 200),
    "not UTF-8": _invalid_utf8,
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_bad_queries_are_refused_and_the_active_query_stays(node, case):
    query = f"active query ({case})"
    node.answer(query)
    before = node.count("bad_queries")
    BAD_QUERIES[case](node)
    node.wait_count_above("bad_queries", before)
    _, result = node.answer(query, send=False)  # still the previous query
    assert result.query == query


def test_query_flood_ends_with_the_newest_query(node):
    for i in range(300):
        node.send_query(f"flood {i}")
    node.answer("flood 299", send=False)
    assert node.proc.proc.poll() is None


def test_stale_frames_are_dropped_not_queued(node):
    """A burst faster than the model: the newest frame wins, the others are counted as dropped."""
    node.answer("burst")
    before_dropped = node.count("frames_dropped")

    def burst():  # best-effort frames can be lost on the wire: burst again until one is dropped
        for _ in range(40):
            node.image.publish(h.make_image(320, 240))
        return h.make_image(320, 240)

    h.publish_until(node.image, burst, lambda: node.count("frames_dropped") > before_dropped, 30,
                    "dropped frames", node.proc, period=0.5)


def test_parameters_are_validated_at_runtime(node):
    refused = node.set_parameter("max_rate", -5.0)
    assert not refused.successful and "max_rate" in refused.reason
    assert node.set_parameter("mask_threshold", 0.5).successful
    node.answer("after a parameter change")


def test_lifecycle_state_is_active(node):
    from lifecycle_msgs.msg import State
    from lifecycle_msgs.srv import GetState

    response = node.probe.call(GetState, f"{node.ns}/keyseg_node/get_state", GetState.Request(), resend_every=5.0)
    assert response.current_state.id == State.PRIMARY_STATE_ACTIVE
