"""`voice_query` as a real process: spoken queries (espeak-ng) become std_msgs/String on `query`;
bad audio is logged and publishes nothing; a missing microphone is a clear error naming it."""

from __future__ import annotations

import shutil
import subprocess
import wave

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy (ROS 2) is not importable: install ROS 2 or the [ros] extra")
pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install keyseg[voice])")

import ros_harness as h  # noqa: E402


@pytest.fixture(scope="module")
def say(tmp_path_factory):
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): cannot synthesise speech")
    folder = tmp_path_factory.mktemp("voice")

    def speak(text: str, name: str):
        path = folder / f"{name}.wav"
        subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True,
                       capture_output=True, timeout=60)
        return path

    return speak


def _wav(path, samples: np.ndarray, rate: int = 16000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate), w.writeframes(samples.astype("<i2").tobytes())


def test_spoken_files_become_queries_and_bad_audio_publishes_nothing(probe, workdir, say):
    from std_msgs.msg import String

    ns = h.unique_namespace()
    queries = probe.collect(String, f"{ns}/query")
    silent, clipped, text = workdir / "silent.wav", workdir / "clipped.wav", workdir / "notes.wav"
    _wav(silent, np.zeros(16000))
    speech = np.frombuffer(wave.open(str(say("where is the remote", "remote"))).readframes(10**6), "<i2")
    _wav(clipped, np.clip(speech.astype(np.int32) * 12, -32768, 32767), 22050)
    text.write_text("not a recording at all\n")
    good = say("where is the teddy bear", "teddy")
    proc = h.Process.start("voice_query", ["--wav", str(silent), str(clipped), str(text), str(good),
                                           "--namespace", ns, "--wait", "60"], workdir)
    rc = proc.wait(120)
    out = proc.output()
    # The good file came last: once its query is here, anything the bad ones sent would be too.
    h.wait_until(lambda: queries.msgs, 30, "the spoken query")
    assert [m.data for m in queries.msgs] == ["where is the teddy bear"], out
    assert rc == 3, out  # some input was refused
    assert "silent.wav: audio is silent" in out and "clipped.wav: audio is clipped" in out
    assert "notes.wav: not a PCM WAV file" in out and out.count("no query published") == 3
    assert "resampled from 22050 Hz to 16000 Hz" in out and "Traceback" not in out


def test_raw_pcm_on_stdin_is_cut_into_one_query_per_utterance(probe, workdir, say):
    from std_msgs.msg import String

    ns = h.unique_namespace()
    queries = probe.collect(String, f"{ns}/query")
    parts = []
    for text, name in (("where is the remote", "a"), ("point to the cell phone", "b")):
        with wave.open(str(say(text, name))) as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), "<i2"))
    gap = np.zeros(22050, np.int16)
    stream = np.concatenate([gap, parts[0], gap, parts[1], gap]).astype("<i2").tobytes()
    proc = subprocess.run([h.executable("voice_query"), "--stdin", "--rate", "22050",
                           "--namespace", ns, "--wait", "60"], input=stream, env=h.child_env(),
                          cwd=workdir, capture_output=True, timeout=120)
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode == 0, out
    h.wait_until(lambda: len(queries.msgs) == 2, 30, "two spoken queries")
    heard = [m.data for m in queries.msgs]
    assert "remote" in heard[0] and "cell phone" in heard[1], out


def test_a_missing_microphone_is_named(ros_install, workdir):
    proc = subprocess.run([h.executable("voice_query"), "--mic", "no-such-mic", "--dry-run"],
                          env=h.child_env(), cwd=workdir, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "microphone 'no-such-mic'" in proc.stderr and "Traceback" not in proc.stderr
