"""Fixtures for the speech tests: spoken queries synthesised with espeak-ng (skipped, with the
install command, where espeak-ng is absent; CI installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def say(tmp_path_factory):
    """say(text) -> Path of a WAV of `text` spoken by espeak-ng's US-English voice (22.05 kHz)."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): cannot synthesise speech")
    folder = tmp_path_factory.mktemp("speech")
    cache: dict[str, Path] = {}

    def speak(text: str) -> Path:
        if text not in cache:
            path = folder / f"utt_{len(cache):03d}.wav"
            subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), text], check=True,
                           capture_output=True, timeout=60)
            cache[text] = path
        return cache[text]

    return speak
