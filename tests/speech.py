"""Real speech for tests: the JFK clip, its reference text, clips cut from it, and word error rate."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from samo.evaluation.journal_speech import wav_bytes
from samo.evaluation.read_speech import JFK_TEXT
from samo.evaluation.wer import word_error_rate

__all__ = ["JFK_TEXT", "JFK_WAV", "RATE", "jfk_samples", "long_speech", "wav_bytes", "word_error_rate"]

JFK_WAV = Path(__file__).parent / "data" / "jfk.wav"
RATE = 16000


def jfk_samples() -> np.ndarray:
    with wave.open(str(JFK_WAV)) as clip:
        return np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)


def long_speech(repeats: int = 6, pause_s: float = 1.0) -> np.ndarray:
    """The JFK clip `repeats` times with pauses between: real speech well over 60 s."""
    pause = np.zeros(int(pause_s * RATE), dtype=np.int16)
    pieces = []
    for _ in range(repeats):
        pieces += [jfk_samples(), pause]
    return np.concatenate(pieces)
