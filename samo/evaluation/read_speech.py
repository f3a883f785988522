"""Real read speech with known text: clips of several speakers joined with pauses into one recording.

Synthetic journal speech (`journal_speech`) says whether every sentence reaches the transcript; its
word error rate says little about real voices. These clips (`tests/data/read_speech/`, from
pocketsphinx's test data, and the JFK clip) are real speech with reference texts. Each clip is used
once, in an order and with pauses of 0.2 to 2 s drawn from `seed`: about 68 s of audio, 51.5 s of it
the clips'.
"""

from __future__ import annotations

import random
import wave
from pathlib import Path

import numpy as np

from samo.contracts.whisper import SAMPLE_RATE
from samo.evaluation.journal_speech import JournalRecording, join_with_pauses

DATA = Path("tests/data")
JFK_TEXT = (
    "And so my fellow Americans, ask not what your country can do for you, ask what you can do for "
    "your country."
)


def read_clip(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV as float32 samples in [-1, 1]."""
    with wave.open(str(path)) as clip:
        if (clip.getframerate(), clip.getnchannels(), clip.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(f"{path}: expected 16 kHz mono 16-bit PCM")
        raw = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    return raw.astype(np.float32) / 32768.0


def read_speech_clips(data: Path = DATA) -> list[tuple[str, np.ndarray]]:
    """(reference text, samples) of every clip: the read-speech folder's and the JFK clip."""
    folder = data / "read_speech"
    clips = []
    for line in (folder / "transcripts.tsv").read_text().splitlines():
        name, text = line.split("\t")
        clips.append((text, read_clip(folder / name)))
    clips.append((JFK_TEXT, read_clip(data / "jfk.wav")))
    return clips


def read_speech_recording(*, seed: int = 0, data: Path = DATA) -> JournalRecording:
    """Every clip once, shuffled by `seed`, pauses of 0.2 to 2 s between them, speech to the last sample."""
    rng = random.Random(seed)
    clips = read_speech_clips(data)
    rng.shuffle(clips)
    return join_with_pauses(clips, rng)
