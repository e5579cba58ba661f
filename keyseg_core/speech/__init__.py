"""Speech in, queries out: offline recognition of spoken KeySeg queries (no ROS here).

`audio` reads and checks WAV files and raw PCM, `vocabulary` holds the query phrasings and
keywords recognition is biased toward, `recognizer` wraps pocketsphinx and faster-whisper, and
`bench` measures word error rate and keyword recall on synthesised speech.
"""

from keyseg_core.speech.audio import SAMPLE_RATE, Audio, AudioError, Utterances, check_speech, from_pcm, read_wav
from keyseg_core.speech.recognizer import (ENGINES, PocketSphinxRecognizer, RecognizerUnavailable, Transcript,
                                           WhisperRecognizer, make_recognizer)
from keyseg_core.speech.vocabulary import QueryVocabulary, normalize

__all__ = [
    "SAMPLE_RATE", "Audio", "AudioError", "Utterances", "check_speech", "from_pcm", "read_wav",
    "ENGINES", "PocketSphinxRecognizer", "RecognizerUnavailable", "Transcript", "WhisperRecognizer",
    "make_recognizer", "QueryVocabulary", "normalize",
]
