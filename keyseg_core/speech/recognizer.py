"""Offline speech recognition of spoken queries: pocketsphinx (default) or faster-whisper.

Both take 16 kHz mono 16-bit PCM (see `audio.py`) and return a `Transcript`. Neither ever
downloads anything: pocketsphinx's PyPI wheel ships its US-English acoustic model, language model
and dictionary; faster-whisper runs only from a model folder that is already on disk.

Biasing. pocketsphinx decodes with a small trigram language model built from a
`QueryVocabulary` (query phrasings x the model's keywords) instead of its general English one,
so words outside that vocabulary cannot be heard: that is the point, and the price. Pass
`bias=False` for the general model. faster-whisper gets the keywords as its initial prompt.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keyseg_core.speech.audio import SAMPLE_RATE
from keyseg_core.speech.vocabulary import (QueryVocabulary, arpa_language_model, normalize,
                                           read_dictionary_words)

ENGINES = ("pocketsphinx", "faster-whisper")


class RecognizerUnavailable(RuntimeError):
    """The engine or its model is not installed here; the message says what to install."""


@dataclass
class Transcript:
    text: str  # normalised: lower case words, no punctuation; "" when nothing was recognised
    confidence: float  # engine's own estimate in [0, 1] (pocketsphinx: hypothesis posterior)
    seconds: float  # time spent recognising
    engine: str


def dither(pcm16: bytes) -> bytes:
    """Add +-1 LSB of noise (the same for the same input). Runs of exact digital zeros, as in
    synthesised speech or a muted gap, break pocketsphinx's log-energy features: on espeak-ng's
    voice, dithering halves the word error rate (56% -> 32%, biased). Real microphones have
    this noise already."""
    samples = np.frombuffer(pcm16, "<i2").astype(np.int32)
    noise = np.random.default_rng(len(samples)).integers(-1, 2, len(samples))
    return np.clip(samples + noise, -32768, 32767).astype("<i2").tobytes()


class PocketSphinxRecognizer:
    """pocketsphinx 5 with its bundled en-us model; biased toward a `QueryVocabulary`."""

    def __init__(self, vocabulary: QueryVocabulary | None = None, *, bias: bool = True,
                 **decoder_options) -> None:
        try:
            import pocketsphinx
        except ImportError:
            raise RecognizerUnavailable(
                "pocketsphinx is not installed: pip install pocketsphinx (or keyseg[voice])") from None
        self.engine = "pocketsphinx" + ("" if bias else " (general English LM)")
        self.unknown_words: set[str] = set()
        self.sentences = 0
        model = Path(pocketsphinx.get_model_path())
        config = {"samprate": SAMPLE_RATE, "loglevel": "FATAL", **decoder_options}
        lm_path = None
        if bias:
            vocabulary = vocabulary or QueryVocabulary.default()
            known = read_dictionary_words(model / "en-us" / "cmudict-en-us.dict")
            sentences = []
            for sentence in vocabulary.corpus():
                missing = [w for w in sentence.split() if w not in known]
                if missing:
                    self.unknown_words.update(missing)
                else:
                    sentences.append(sentence)
            if not sentences:
                raise ValueError("no phrase of the query vocabulary can be pronounced with the "
                                 f"pocketsphinx dictionary (unknown words: {sorted(self.unknown_words)[:10]})")
            self.sentences = len(sentences)
            fd, lm_path = tempfile.mkstemp(prefix="keyseg_queries_", suffix=".arpa")
            with os.fdopen(fd, "w") as f:
                f.write(arpa_language_model(sentences))
            config["lm"] = lm_path
        try:
            self._decoder = pocketsphinx.Decoder(**config)
        finally:
            if lm_path:
                os.unlink(lm_path)
        self._lock = threading.Lock()

    def transcribe(self, pcm16: bytes) -> Transcript:
        start = time.perf_counter()
        pcm16 = dither(pcm16)
        with self._lock:
            decoder = self._decoder
            decoder.start_utt()
            decoder.process_raw(pcm16, full_utt=True)
            decoder.end_utt()
            hyp = decoder.hyp()
        words = [w for w in (hyp.hypstr.split() if hyp else []) if not w.startswith(("<", "["))]
        confidence = float(hyp.prob) if hyp is not None else 0.0
        return Transcript(normalize(" ".join(words)), min(max(confidence, 0.0), 1.0),
                          time.perf_counter() - start, self.engine)


class WhisperRecognizer:
    """faster-whisper from a local CTranslate2 model folder (never downloaded here)."""

    def __init__(self, model_dir: str | Path, vocabulary: QueryVocabulary | None = None, *,
                 bias: bool = True, device: str = "cpu", compute_type: str = "int8") -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise RecognizerUnavailable(
                "faster-whisper is not installed: pip install faster-whisper") from None
        path = Path(model_dir).expanduser()
        if not (path / "model.bin").is_file():
            raise RecognizerUnavailable(
                f"{path}: not a local faster-whisper model folder (no model.bin). Models are never "
                "downloaded here: copy a converted model (e.g. Systran/faster-whisper-small) to disk")
        self.engine = f"faster-whisper ({path.name})"
        self._model = WhisperModel(str(path), device=device, compute_type=compute_type,
                                   local_files_only=True)
        vocabulary = vocabulary or QueryVocabulary.default()
        self._prompt = ("A spoken request to a robot about objects such as "
                        + ", ".join(vocabulary.keywords[:120]) + ".") if bias else None
        self._lock = threading.Lock()

    def transcribe(self, pcm16: bytes) -> Transcript:
        start = time.perf_counter()
        audio = np.frombuffer(pcm16, "<i2").astype(np.float32) / 32768.0
        with self._lock:
            segments, _ = self._model.transcribe(audio, language="en", beam_size=5,
                                                 initial_prompt=self._prompt,
                                                 condition_on_previous_text=False)
            segments = list(segments)
        text = " ".join(s.text for s in segments)
        logprob = float(np.mean([s.avg_logprob for s in segments])) if segments else -math.inf
        return Transcript(normalize(text), math.exp(logprob) if segments else 0.0,
                          time.perf_counter() - start, self.engine)


def make_recognizer(engine: str = "pocketsphinx", *, vocabulary: QueryVocabulary | None = None,
                    bias: bool = True, whisper_model: str | Path | None = None):
    """A recogniser by engine name; `RecognizerUnavailable` says what is missing."""
    if engine == "pocketsphinx":
        return PocketSphinxRecognizer(vocabulary, bias=bias)
    if engine == "faster-whisper":
        if not whisper_model:
            raise RecognizerUnavailable("faster-whisper needs --whisper-model <local model folder>")
        return WhisperRecognizer(whisper_model, vocabulary, bias=bias)
    raise ValueError(f"unknown speech engine '{engine}' (choose from {', '.join(ENGINES)})")
