"""keyseg_core.speech.audio: WAV and raw PCM in; bad input refused with a reason (no espeak-ng needed)."""

from __future__ import annotations

import struct
import wave

import numpy as np
import pytest

from keyseg_core.speech.audio import (SAMPLE_RATE, Audio, AudioError, check_speech, from_pcm, read_wav,
                                      resample)


def voiced(seconds: float = 1.0, rate: int = SAMPLE_RATE, level: float = 8000.0) -> np.ndarray:
    """A speech-like signal: a 120 Hz voice with harmonics, amplitude-modulated like syllables."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4 * t))
    return (level * tone * envelope / 2).astype(np.int16)


def write_wav(path, samples: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def test_voiced_16k_mono_passes_unchanged(tmp_path):
    write_wav(tmp_path / "a.wav", voiced(), SAMPLE_RATE)
    audio = read_wav(tmp_path / "a.wav")
    assert audio.rate == SAMPLE_RATE and audio.notes == [] and abs(audio.seconds - 1.0) < 1e-3
    check_speech(audio)


def test_other_rates_and_channel_counts_are_converted_and_said(tmp_path):
    mono = voiced(1.0, 44_100)
    write_wav(tmp_path / "stereo.wav", np.stack([mono, mono], axis=1), 44_100, channels=2)
    audio = read_wav(tmp_path / "stereo.wav")
    assert audio.notes == ["mixed 2 channels down to mono", "resampled from 44100 Hz to 16000 Hz"]
    assert audio.rate == SAMPLE_RATE and abs(len(audio.samples) - SAMPLE_RATE) <= 1
    check_speech(audio)


@pytest.mark.parametrize("width", [1, 3, 4])
def test_8_24_and_32_bit_wav_are_read(tmp_path, width):
    x = voiced().astype(np.int32)
    if width == 1:
        raw = ((x >> 8) + 128).astype(np.uint8).tobytes()
    elif width == 3:
        v = (x << 8).astype("<i4").tobytes()
        raw = b"".join(v[i:i + 3] for i in range(0, len(v), 4))
    else:
        raw = (x << 16).astype("<i4").tobytes()
    with wave.open(str(tmp_path / "w.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(width), w.setframerate(SAMPLE_RATE), w.writeframes(raw)
    audio = read_wav(tmp_path / "w.wav")
    assert np.abs(audio.samples.astype(int) - voiced().astype(int)).max() <= 256


def test_resample_keeps_length_and_pitch():
    x = voiced(0.5, 22_050)
    y = resample(x, 22_050, SAMPLE_RATE)
    assert abs(len(y) - 8000) <= 1 and y.dtype == np.int16


@pytest.mark.parametrize("samples, reason", [
    (np.zeros(SAMPLE_RATE, np.int16), "silent"),
    (np.clip(voiced().astype(np.int32) * 12, -32768, 32767).astype(np.int16), "clipped"),
    (np.random.default_rng(0).normal(0, 4000, SAMPLE_RATE).astype(np.int16), "noise, not speech"),
    (voiced(0.1), "too short"),
])
def test_bad_audio_is_refused_with_the_reason(samples, reason):
    with pytest.raises(AudioError, match=reason):
        check_speech(Audio(samples, SAMPLE_RATE, "mic"))


def test_text_is_not_audio():
    text = b"the cup I can drink from, the chair by the door. " * 700
    audio = from_pcm(text[: len(text) // 2 * 2], SAMPLE_RATE, 1, "stdin")
    with pytest.raises(AudioError, match="not audio"):
        check_speech(audio)


def test_a_file_that_is_not_wav_is_refused(tmp_path):
    (tmp_path / "notes.wav").write_text("these are my notes, not a recording\n")
    with pytest.raises(AudioError, match="not a PCM WAV file"):
        read_wav(tmp_path / "notes.wav")
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "missing.wav")


def test_float_wav_is_refused_with_a_conversion_hint(tmp_path):
    data = np.zeros(1600, np.float32).tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, SAMPLE_RATE, SAMPLE_RATE * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    (tmp_path / "float.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(AudioError, match="only integer PCM WAV"):
        read_wav(tmp_path / "float.wav")


def test_raw_pcm_of_the_wrong_shape_or_rate_is_refused():
    with pytest.raises(AudioError, match="not a whole number"):
        from_pcm(b"\x00" * 1001, SAMPLE_RATE, 1, "stdin")
    with pytest.raises(AudioError, match="not a whole number"):
        from_pcm(b"\x00" * 1002, SAMPLE_RATE, 2, "stdin")
    with pytest.raises(AudioError, match="4000 Hz"):
        from_pcm(b"\x00" * 1000, 4000, 1, "stdin")
