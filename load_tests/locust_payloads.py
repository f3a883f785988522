"""Realistic request payloads for the Locust file, built once per process.

Texts: journal entries made of first-person phrases (load_tests/texts.py) and the spoken journal
sentences of samo.evaluation.journal_speech. Speech: the real JFK recording of the repository
(tests/data/jfk.wav) whole and cut into pieces, and journal sentences spoken by Debian's espeak-ng in
several voices. Every payload is picked at random per request, so batches see varied lengths.
"""

from __future__ import annotations

import logging
import random
import wave
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from load_tests.texts import journal_texts
from samo.contracts.whisper import SAMPLE_RATE
from samo.evaluation.journal_speech import (
    JOURNAL_SENTENCES,
    VOICES,
    espeak_available,
    journal_recording,
    speak,
    wav_bytes,
)

log = logging.getLogger(__name__)

JFK_WAV = Path(__file__).parents[1] / "tests" / "data" / "jfk.wav"
# Pieces of the 11 s JFK clip (seconds), cut between words: short app recordings of real speech.
JFK_CUTS = ((0.0, 3.0), (2.0, 7.0), (4.0, 11.0), (0.0, 8.0))
SPOKEN_CLIPS = 6
SPOKEN_ENTRIES = 4
SPOKEN_ENTRY_S = 10.0


@dataclass(frozen=True)
class SpeechClip:
    """A WAV file's bytes and its length; the load test never logs or echoes either."""

    name: str
    wav: bytes
    seconds: float


@cache
def entries() -> tuple[str, ...]:
    """Short written entries (one to three sentences, about 10 to 45 tokens)."""
    return tuple(journal_texts(512, seed=13))


@cache
def long_entries() -> tuple[str, ...]:
    """Entries of 4 to 8 sentences, for summaries and the journal analysis."""
    rng = random.Random(17)
    pool = list(JOURNAL_SENTENCES) + list(entries()[:64])
    return tuple(" ".join(rng.sample(pool, rng.randint(4, 8))) for _ in range(128))


@cache
def clips() -> tuple[SpeechClip, ...]:
    """Short spoken clips (about 3 to 11 s): the JFK recording and its pieces, espeak-ng sentences."""
    result: list[SpeechClip] = []
    if JFK_WAV.exists():
        with wave.open(str(JFK_WAV)) as recording:
            jfk = np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16)
        result.append(SpeechClip("jfk", wav_bytes(jfk), jfk.size / SAMPLE_RATE))
        for start, end in JFK_CUTS:
            piece = jfk[int(start * SAMPLE_RATE) : int(end * SAMPLE_RATE)]
            result.append(SpeechClip(f"jfk[{start:g}:{end:g}]", wav_bytes(piece), piece.size / SAMPLE_RATE))
    else:
        log.warning("%s is missing: speech payloads are espeak-ng sentences only", JFK_WAV)
    if espeak_available():
        rng = random.Random(19)
        for number, text in enumerate(rng.sample(JOURNAL_SENTENCES, SPOKEN_CLIPS)):
            samples = speak(text, VOICES[number % len(VOICES)], rng.randint(150, 185))
            result.append(SpeechClip(f"espeak-{number}", wav_bytes(samples), samples.size / SAMPLE_RATE))
    else:
        log.warning("espeak-ng is not installed: speech payloads are the JFK recording only")
    if not result:
        raise RuntimeError(
            f"no speech for the load test: {JFK_WAV} is missing and espeak-ng is not installed"
        )
    return tuple(result)


@cache
def spoken_entries() -> tuple[SpeechClip, ...]:
    """Spoken journal entries: several sentences with pauses, about 12 to 13 s; JFK clips without espeak-ng."""
    if not espeak_available():
        return tuple(clip for clip in clips() if clip.seconds >= 7)
    result = []
    for seed in range(SPOKEN_ENTRIES):
        recording = journal_recording(SPOKEN_ENTRY_S, seed=100 + seed, long_sentences=0)
        result.append(SpeechClip(f"entry-{seed}", recording.wav_bytes(), recording.duration))
    return tuple(result)
