"""Audio in, checked: WAV files and raw 16-bit PCM become 16 kHz mono 16-bit PCM for recognition.

Bad input is refused with an `AudioError` whose message says what is wrong and what to do:
not a WAV file or not PCM, too short, silent, clipped, noise rather than speech, a sample rate
too low for speech. Other sample rates are resampled to 16 kHz and several channels are mixed
down to mono; each conversion is reported in `Audio.notes`, so the caller can log it.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000  # what the recognisers take (pocketsphinx's en-us model is 16 kHz)
MIN_RATE = 8_000  # telephone band: below it speech is not intelligible
MAX_RATE = 192_000
MAX_CHANNELS = 16
MIN_SECONDS = 0.25
SILENCE_DBFS = -45.0  # RMS of the loudest 100 ms below this: nothing was said
CLIP_LEVEL = 32_000  # |sample| at or above this (of 32767) counts as at full scale
CLIP_FRACTION = 0.01  # more than 1% of samples at full scale: the input was clipped
NOISE_FLATNESS = 0.5  # spectral flatness above this: noise (or bytes that are not audio)
DC_FRACTION = 0.1  # mean sample beyond 10% of full scale: not audio, or the wrong sample format


class AudioError(ValueError):
    """Audio that cannot or should not be recognised; the message is meant for the user."""


@dataclass
class Audio:
    """Mono 16-bit PCM at `rate` Hz, with where it came from and what was done to it."""

    samples: np.ndarray  # int16, shape (n,)
    rate: int
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate if self.rate else 0.0

    def pcm16(self) -> bytes:
        return self.samples.astype("<i2").tobytes()


def _to_int16(frames: bytes, width: int) -> np.ndarray:
    """Interleaved PCM of `width` bytes per sample (WAV conventions) as int16."""
    if width == 1:  # unsigned 8-bit
        return ((np.frombuffer(frames, np.uint8).astype(np.int16) - 128) << 8).astype(np.int16)
    if width == 2:
        return np.frombuffer(frames, "<i2").copy()
    if width == 3:
        raw = np.frombuffer(frames, np.uint8).reshape(-1, 3)
        value = (raw[:, 0].astype(np.int32) | (raw[:, 1].astype(np.int32) << 8)
                 | (raw[:, 2].astype(np.int32) << 16))
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return (value >> 8).astype(np.int16)
    if width == 4:
        return (np.frombuffer(frames, "<i4") >> 16).astype(np.int16)
    raise AudioError(f"{width * 8}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")


def from_pcm(data: bytes, rate: int, channels: int, source: str, width: int = 2) -> Audio:
    """Raw interleaved little-endian PCM (as from `arecord -f S16_LE` or stdin) -> checked Audio
    at 16 kHz mono."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{source}: sample rate {rate} Hz is outside {MIN_RATE}-{MAX_RATE} Hz "
                         f"(speech needs at least {MIN_RATE} Hz; {SAMPLE_RATE} Hz is best)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"{source}: {channels} channels is not a recording this tool reads "
                         f"(1 to {MAX_CHANNELS})")
    frame = width * channels
    if len(data) % frame:
        raise AudioError(f"{source}: {len(data)} bytes is not a whole number of {channels}-channel "
                         f"{width * 8}-bit frames: not raw PCM of that format")
    samples = _to_int16(data, width)
    notes = []
    if channels > 1:
        samples = samples.reshape(-1, channels).astype(np.int32).mean(axis=1).astype(np.int16)
        notes.append(f"mixed {channels} channels down to mono")
    if rate != SAMPLE_RATE:
        samples = resample(samples, rate, SAMPLE_RATE)
        notes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    return Audio(samples, SAMPLE_RATE, source, notes)


def read_wav(path: str | Path) -> Audio:
    """A PCM WAV file (8/16/24/32-bit, any channel count up to 16, 8-192 kHz) as 16 kHz mono."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise AudioError(f"{source}: no such file")
    try:
        with wave.open(str(path), "rb") as wav:
            rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
            frames = wav.readframes(wav.getnframes())
    except wave.Error as exc:
        reason = str(exc)
        if "unknown format" in reason:
            reason += " (only integer PCM WAV is read: convert with `sox in.wav -b 16 out.wav`)"
        raise AudioError(f"{source}: not a PCM WAV file ({reason})") from None
    except (EOFError, OSError) as exc:
        raise AudioError(f"{source}: not a readable WAV file ({exc or 'truncated'})") from None
    return from_pcm(frames, rate, channels, source, width)


def resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) of int16 samples, with a linear-interpolation fallback."""
    if rate_in == rate_out or not len(samples):
        return samples
    x = samples.astype(np.float32)
    try:
        from scipy.signal import resample_poly

        g = gcd(rate_in, rate_out)
        y = resample_poly(x, rate_out // g, rate_in // g)
    except ImportError:
        n_out = int(round(len(x) * rate_out / rate_in))
        y = np.interp(np.arange(n_out) * (rate_in / rate_out), np.arange(len(x)), x)
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def dbfs(value: float) -> float:
    return 20.0 * np.log10(max(value, 1e-9) / 32768.0)


def spectral_flatness(samples: np.ndarray, rate: int) -> float:
    """Mean spectral flatness (geometric / arithmetic mean of the power spectrum) of the loudest
    frames: ~0.01-0.3 for speech, ~0.6+ for white noise or bytes that are not audio."""
    n = int(0.032 * rate)
    frames = samples[: len(samples) // n * n].astype(np.float64).reshape(-1, n)
    if not len(frames):
        return 0.0
    energy = (frames ** 2).mean(axis=1)
    loud = frames[energy >= np.percentile(energy, 50)] * np.hanning(n)
    power = np.abs(np.fft.rfft(loud, axis=1)) ** 2 + 1e-10
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    return float(np.median(flatness))


def check_speech(audio: Audio) -> None:
    """Refuse audio that cannot hold a query: too short, silent, clipped, or noise."""
    samples, source = audio.samples, audio.source
    if audio.seconds < MIN_SECONDS:
        raise AudioError(f"{source}: {audio.seconds:.2f} s of audio is too short for a query "
                         f"(at least {MIN_SECONDS} s)")
    window = max(1, int(0.1 * audio.rate))
    x = samples.astype(np.float64)
    offset = float(x.mean()) / 32768.0
    if abs(offset) > DC_FRACTION:
        raise AudioError(f"{source}: not audio, or not in the stated sample format (the samples "
                         f"sit at {offset:+.0%} of full scale on average; speech averages ~0)")
    blocks = x[: len(x) // window * window].reshape(-1, window) if len(x) >= window else x[None]
    loudest = float(np.sqrt((blocks ** 2).mean(axis=1)).max())
    if dbfs(loudest) < SILENCE_DBFS:
        raise AudioError(f"{source}: audio is silent (loudest 100 ms at {dbfs(loudest):.0f} dBFS, "
                         f"speech needs more than {SILENCE_DBFS:.0f} dBFS): is the microphone muted "
                         "or far away?")
    clipped = float((np.abs(x) >= CLIP_LEVEL).mean())
    if clipped > CLIP_FRACTION:
        raise AudioError(f"{source}: audio is clipped ({clipped:.1%} of samples at full scale): "
                         "lower the input gain or speak further from the microphone")
    flatness = spectral_flatness(samples, audio.rate)
    if flatness > NOISE_FLATNESS:
        raise AudioError(f"{source}: this is noise, not speech (spectral flatness {flatness:.2f}); "
                         "is the input really audio in the stated format?")


class Utterances:
    """Cuts a stream of 16 kHz mono 16-bit PCM into utterances with pocketsphinx's VAD endpointer."""

    def __init__(self, window: float = 0.3, ratio: float = 0.9) -> None:
        from pocketsphinx import Endpointer

        self._ep = Endpointer(window=window, ratio=ratio, sample_rate=SAMPLE_RATE)
        self._pending = b""
        self._current: list[bytes] = []

    def feed(self, pcm: bytes) -> list[bytes]:
        """Add audio; returns the utterances that ended in it."""
        data = self._pending + pcm
        step = self._ep.frame_bytes
        done = []
        for start in range(0, len(data) - step + 1, step):
            was_speech = self._ep.in_speech
            speech = self._ep.process(data[start:start + step])
            if speech is not None:
                self._current.append(speech)
            if was_speech and not self._ep.in_speech and self._current:
                done.append(b"".join(self._current))
                self._current = []
        self._pending = data[len(data) // step * step:]
        return done

    def finish(self) -> list[bytes]:
        """End of stream: the utterance still open, if any."""
        if self._ep.in_speech:
            rest = self._ep.end_stream(self._pending)
            if rest:
                self._current.append(rest)
        self._pending = b""
        done = [b"".join(self._current)] if self._current else []
        self._current = []
        return done
