"""The `query` and `image_player` tools as real processes, observed by the test's own node."""

from __future__ import annotations

import io
import subprocess

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
                                            "--count", "6", "--encoding", encoding, "--frame-id", "cam0",
                                            "--wait", "10"], workdir)
    assert proc.wait(60) == 0, proc.output()
    h.wait_until(lambda: len(frames.msgs) >= 3, 30, "played frames")
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
                                            "--resize", "64x48", "--wait", "10"], workdir)
    assert proc.wait(60) == 0, proc.output()
    h.wait_until(lambda: len(received.msgs) >= 2, 30, "compressed frames")
    with PILImage.open(io.BytesIO(received.msgs[0].data.tobytes())) as img:
        assert (img.format, img.size) == ("JPEG", (64, 48))


def test_image_player_fails_clearly_on_a_missing_path(ros_install, workdir):
    proc = h.Process.start("image_player", [str(workdir / "nothing-here")], workdir)
    assert proc.wait(60) == 1
    assert "no such file or folder" in proc.output() and "Traceback" not in proc.output()
