"""The `query` and `image_player` tools as real processes, observed by the test's own node.

Best-effort frames can be lost while discovery settles, so the players stream (--loop) until the
probe has what it needs, then are stopped with a signal, which must end them cleanly: exit code 0
and no traceback, also when the signal races a publish.
"""

from __future__ import annotations

import io
import signal
import subprocess
import threading
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")

import numpy as np  # noqa: E402
import ros_harness as h  # noqa: E402


def test_query_tool_publishes_queries_and_clears(probe, workdir):
    from std_msgs.msg import Empty, String

    ns = h.unique_namespace()
    queries = probe.collect(String, f"{ns}/query")
    clears = probe.collect(Empty, f"{ns}/clear_query")
    proc = h.Process.start("query", ["the red mug", "--namespace", ns], workdir)
    assert proc.wait(60) == 0, proc.output()
    h.wait_until(lambda: [m.data for m in queries.msgs] == ["the red mug"], 30, "the query")

    proc = h.Process.start("query", ["--clear", "--namespace", ns], workdir)
    assert proc.wait(60) == 0, proc.output()
    h.wait_until(lambda: len(clears.msgs) == 1, 30, "the clear")

    lines = subprocess.run([h.executable("query"), "--namespace", ns], input="pick the apple\n\nthen the pear\n",
                           env=h.child_env(), cwd=workdir, capture_output=True, text=True, timeout=60)
    assert lines.returncode == 0, lines.stderr
    h.wait_until(lambda: [m.data for m in queries.msgs][1:] == ["pick the apple", "then the pear"], 30,
                 "queries read from stdin")


def test_query_tool_fails_clearly_without_a_subscriber(ros_install, workdir):
    proc = h.Process.start("query", ["hello", "--namespace", h.unique_namespace(), "--wait", "0.5"], workdir)
    assert proc.wait(60) == 1
    assert "nobody subscribes" in proc.output() and "Traceback" not in proc.output()


@pytest.fixture
def pictures(tmp_path):
    from PIL import Image as PILImage

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(3):
        PILImage.fromarray(np.full((30, 40, 3), 80 * i, np.uint8)).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_image_player_plays_a_folder(probe, workdir, pictures, encoding):
    from sensor_msgs.msg import Image

    topic = f"{h.unique_namespace()}/camera"
    frames = probe.collect(Image, topic, h.qos_sensor_data())
    proc = h.Process.start("image_player", [str(pictures), "--topic", topic, "--rate", "30", "--loop",
                                            "--encoding", encoding, "--frame-id", "cam0", "--wait", "10"],
                           workdir)
    try:
        h.wait_until(lambda: len(frames.msgs) >= 3, 60, "played frames", proc)
    finally:
        proc.assert_clean_stop()
    first = frames.msgs[0]
    channels = 1 if encoding == "mono8" else 3
    assert (first.width, first.height, first.encoding, first.step) == (40, 30, encoding, 40 * channels)
    assert first.header.frame_id == "cam0"


def test_image_player_plays_a_video_as_compressed_frames(probe, workdir, tmp_path):
    from PIL import Image as PILImage
    from sensor_msgs.msg import CompressedImage

    video = tmp_path / "clip.gif"
    frames = [PILImage.fromarray(np.full((24, 32, 3), 50 * i, np.uint8)) for i in range(4)]
    frames[0].save(video, save_all=True, append_images=frames[1:], duration=50)
    topic = f"{h.unique_namespace()}/camera"
    received = probe.collect(CompressedImage, f"{topic}/compressed", h.qos_sensor_data())
    proc = h.Process.start("image_player", [str(video), "--topic", topic, "--rate", "30", "--compressed",
                                            "--resize", "64x48", "--loop", "--wait", "10"], workdir)
    try:
        h.wait_until(lambda: len(received.msgs) >= 2, 60, "compressed frames", proc)
    finally:
        proc.assert_clean_stop()
    with PILImage.open(io.BytesIO(received.msgs[0].data.tobytes())) as img:
        assert (img.format, img.size) == ("JPEG", (64, 48))


def test_image_player_fails_clearly_on_a_missing_path(ros_install, workdir):
    proc = h.Process.start("image_player", [str(workdir / "nothing-here")], workdir)
    assert proc.wait(60) == 1
    assert "no such file or folder" in proc.output() and "Traceback" not in proc.output()


def test_image_player_stops_by_itself_after_count_or_at_the_end(ros_install, workdir, pictures):
    """No subscriber needed: what it sent is in its own log."""
    counted = h.Process.start("image_player", [str(pictures), "--topic", f"{h.unique_namespace()}/camera",
                                               "--rate", "50", "--loop", "--count", "5"], workdir)
    once = h.Process.start("image_player", [str(pictures), "--topic", f"{h.unique_namespace()}/camera",
                                            "--rate", "50"], workdir)
    for proc, sent in ((counted, 5), (once, 3)):
        assert proc.wait(60) == 0, proc.output()
        assert f"published {sent} frame(s)" in proc.output() and "Traceback" not in proc.output()


# ---- stopping the tools mid-publish -----------------------------------------------------------

STOP_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM]


def _stop_all_and_check(procs, what: str) -> None:
    """Signal each running process (SIGINT and SIGTERM in turn); each must exit 0 with no traceback.

    The processes publish independently, so the signals land at unrelated points of their loops:
    before, during or after a publish."""
    for k, (proc, sig) in enumerate(zip(procs, STOP_SIGNALS)):
        assert proc.proc.poll() is None, f"{what} {k} ended before its signal:\n{proc.output()[-3000:]}"
        proc.proc.send_signal(sig)
    for k, (proc, sig) in enumerate(zip(procs, STOP_SIGNALS)):
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.proc.kill()
            proc.proc.wait()
            raise AssertionError(f"{what} {k} did not stop on {sig.name}:\n{proc.output()[-3000:]}")
        out = proc.output()
        assert rc == 0, f"{what} {k}: exit code {rc} after {sig.name}:\n{out[-3000:]}"
        assert "Traceback" not in out and "context is invalid" not in out, out[-3000:]
        assert f"{sig.name} received: stopping" in out, out[-3000:]


def test_image_player_stops_cleanly_mid_publish(probe, workdir, pictures):
    from sensor_msgs.msg import Image

    procs, streams = [], []
    try:
        for _ in STOP_SIGNALS:  # four players at once, each streaming fast on its own topic
            topic = f"{h.unique_namespace()}/camera"
            streams.append(probe.collect(Image, topic, h.qos_sensor_data()))
            procs.append(h.Process.start("image_player", [str(pictures), "--topic", topic, "--rate", "200",
                                                          "--loop", "--wait", "30"], workdir))
        for proc, frames in zip(procs, streams):
            h.wait_until(lambda: len(frames.msgs) >= 5, 60, "a player streaming", proc)
        _stop_all_and_check(procs, "image_player")
    finally:
        for proc in procs:
            if proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait()


class _QueryStream:
    """The query tool reading stdin, fed a new line every few milliseconds (a chatty front end)."""

    def __init__(self, ns: str, workdir) -> None:
        self.log = workdir / f"query_stream_{h.unique_namespace().strip('/')}.log"
        with open(self.log, "w") as out:
            popen = subprocess.Popen([h.executable("query"), "--namespace", ns, "--wait", "30"],
                                     stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                     env=h.child_env(), cwd=workdir, text=True)
        self.process = h.Process(popen, self.log)
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        try:
            for i in range(100000):
                if self.process.proc.poll() is not None:
                    return
                self.process.proc.stdin.write(f"query number {i}\n")
                self.process.proc.stdin.flush()
                time.sleep(0.005)
        except (OSError, ValueError):  # the tool stopped: its stdin is gone
            return

    def close(self) -> None:
        if self.process.proc.poll() is None:
            self.process.proc.kill()
            self.process.proc.wait()
        self._feeder.join(timeout=10)
        try:
            self.process.proc.stdin.close()
        except OSError:
            pass


def test_query_tool_stops_cleanly_mid_publish(probe, workdir):
    """Three tools publishing a stream of queries from stdin, and one idle with --keep."""
    from std_msgs.msg import String

    streams, received = [], []
    keep = None
    try:
        for _ in range(3):
            ns = h.unique_namespace()
            received.append(probe.collect(String, f"{ns}/query"))
            streams.append(_QueryStream(ns, workdir))
        ns = h.unique_namespace()
        kept = probe.collect(String, f"{ns}/query")
        keep = h.Process.start("query", ["kept query", "--namespace", ns, "--keep", "--wait", "30"], workdir)
        for stream, queries in zip(streams, received):
            h.wait_until(lambda: len(queries.msgs) >= 5, 60, "the query tool publishing", stream.process)
        h.wait_until(lambda: [m.data for m in kept.msgs] == ["kept query"], 60, "the kept query", keep)
        _stop_all_and_check([s.process for s in streams] + [keep], "query")
    finally:
        for stream in streams:
            stream.close()
        if keep is not None and keep.proc.poll() is None:
            keep.proc.kill()
            keep.proc.wait()
