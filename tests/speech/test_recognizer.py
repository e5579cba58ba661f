"""Offline recognition of spoken queries (espeak-ng's voice, pocketsphinx's bundled model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pocketsphinx", reason="pocketsphinx is not installed (pip install keyseg[voice])")

from keyseg_core.speech import (SAMPLE_RATE, QueryVocabulary, RecognizerUnavailable, Utterances,  # noqa: E402
                                make_recognizer, read_wav)
from keyseg_core.speech import recognizer_bench as bench  # noqa: E402

SPOKEN = {  # query -> the keyword it must be heard with
    "where is the remote": "remote",
    "point to the cell phone": "cell phone",
    "the bottle next to the sink": "bottle",
    "which object in this room is used for sleeping": None,
}


@pytest.fixture(scope="module")
def biased():
    return make_recognizer("pocketsphinx", bias=True)


def test_biased_recognition_hears_the_queries(say, biased):
    vocab = QueryVocabulary.default()
    for text, keyword in SPOKEN.items():
        audio = read_wav(say(text))
        assert audio.notes == ["resampled from 22050 Hz to 16000 Hz"]
        heard = biased.transcribe(audio.pcm16())
        if keyword:
            assert keyword in vocab.keywords_in(heard.text), (text, heard.text)
        assert bench.word_errors(text, heard.text) <= 1, (text, heard.text)


def test_biasing_lowers_the_word_error_rate(say, biased):
    general = make_recognizer("pocketsphinx", bias=False)
    errors = {"general": 0, "biased": 0}
    for text in SPOKEN:
        pcm = read_wav(say(text)).pcm16()
        errors["general"] += bench.word_errors(text, general.transcribe(pcm).text)
        errors["biased"] += bench.word_errors(text, biased.transcribe(pcm).text)
    assert errors["biased"] < errors["general"], errors


def test_a_stream_is_cut_into_one_utterance_per_query(say, biased):
    first = read_wav(say("where is the remote")).samples
    second = read_wav(say("point to the cell phone")).samples
    silence = np.zeros(SAMPLE_RATE, np.int16)
    stream = np.concatenate([silence, first, silence, second, silence]).astype("<i2").tobytes()
    cutter, utterances = Utterances(), []
    for start in range(0, len(stream), 4000):  # 0.125 s blocks, as a microphone delivers
        utterances += cutter.feed(stream[start:start + 4000])
    utterances += cutter.finish()
    assert len(utterances) == 2
    heard = [biased.transcribe(u).text for u in utterances]
    assert "remote" in heard[0] and "cell phone" in heard[1], heard


def test_faster_whisper_never_downloads(tmp_path):
    with pytest.raises(RecognizerUnavailable, match="faster-whisper"):
        make_recognizer("faster-whisper", whisper_model=tmp_path / "no-model-here")
    with pytest.raises(RecognizerUnavailable, match="--whisper-model"):
        make_recognizer("faster-whisper")


def test_bench_prints_a_table_and_writes_json(say, tmp_path, capsys):
    out = tmp_path / "speech.json"
    assert bench.main(["--limit", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| general |" in printed and "| biased |" in printed and "keyword recall" in printed
    report = json.loads(out.read_text())
    assert report["queries"] == 3
    for mode in ("general", "biased"):
        result = report["results"][mode]
        assert 0.0 <= result["wer"] and len(result["queries"]) == 3
        assert result["keyword_recall"] is not None
