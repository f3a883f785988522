"""Long journal-like recordings with known text, for transcript coverage tests and the Whisper benchmark.

Many different sentences (no clip repeated) spoken by Debian's `espeak-ng` in several voices and
speeds, separated by pauses of 0.2 to 2 s, with some sentences longer than Whisper's 30 s window and
speech running right to the last sample. Synthetic speech is fine for coverage (is every sentence in
the transcript?); its absolute word error rate says little about real speech, so compare systems on
the same recording. Real speech (the JFK clip) can be mixed in.
"""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import wave
from dataclasses import dataclass
from functools import cache

import numpy as np

from samo.contracts.whisper import SAMPLE_RATE

ESPEAK = "espeak-ng"
VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb-x-rp", "en-us+m3")

JOURNAL_SENTENCES = (
    "I woke up before the alarm today and watched the light come through the kitchen window.",
    "Work was stressful again because the deadline moved up by a whole week.",
    "My sister called in the evening and we laughed about the trip we took when we were kids.",
    "I am grateful for the quiet walk by the river after lunch.",
    "The meeting with my manager went better than I expected.",
    "I keep worrying about money, even though the numbers look fine on paper.",
    "Tonight I cooked lentil soup for the first time and it actually tasted good.",
    "I felt lonely for a while in the afternoon, so I texted an old friend.",
    "The dog refused to come inside until it started to rain.",
    "I want to remember how proud I felt when the presentation was over.",
    "My knee still hurts from the run on Sunday, so I skipped the gym.",
    "Reading before bed is helping me fall asleep faster than scrolling on my phone.",
    "I was annoyed at the train delay, but I finished two chapters of my book while waiting.",
    "Mom sounded tired on the phone and I am a little worried about her.",
    "The new neighbors brought over cookies and introduced their two small children.",
    "I finally cleaned the garage and found the old photo albums from college.",
    "Today I noticed that I apologize far too often in meetings.",
    "We planted tomatoes and basil in the garden, and the soil smelled wonderful.",
    "I am nervous about the doctor's appointment on Thursday morning.",
    "It surprised me how calm I stayed when the project was cancelled.",
    "My therapist asked me to write down three good things every single day.",
    "The first good thing today was the coffee my partner made without being asked.",
    "I lost my temper with the customer service agent and I regret it.",
    "Lunch with the team was loud and fun, and nobody talked about work.",
    "I miss my grandfather most on rainy days like this one.",
    "Tomorrow I will start the morning with a short stretch instead of email.",
    "The concert was amazing, and the drummer played a solo that went on for minutes.",
    "I feel confused about whether to accept the offer from the other company.",
    "Our landlord finally fixed the heating, so the apartment is warm again.",
    "I am excited about the weekend because we are driving to the coast.",
)

# Run-on sentences longer than one 30 s window: a window cut must fall inside them.
LONG_SENTENCES = (
    "Today started slowly because I stayed in bed longer than I should have and then I rushed to "
    "catch the bus and on the way I kept thinking about the argument from last night and how I could "
    "have said things more gently and by the time I reached the office I had decided to call him at "
    "lunch and say sorry and he was kind about it and we agreed to cook dinner together tonight and "
    "talk properly without our phones on the table and I really hope we keep that promise to each "
    "other because it felt like the first honest conversation we have had in weeks",
    "This evening I walked around the park three times while the sun went down and I tried to list "
    "everything that is going right in my life even when it feels like nothing is and I came up with "
    "my health and my friends and the fact that I still enjoy my job most days and the small garden "
    "on the balcony that somehow survived the summer and the new recipe book and the letters from my "
    "cousin who writes every month without fail and by the end of the third lap I felt lighter than "
    "I have felt for a long time and I promised myself to do this again next week",
)


@dataclass(frozen=True)
class Utterance:
    """One spoken sentence and where it lies in the recording (seconds)."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class JournalRecording:
    """16 kHz mono float32 samples, the text spoken, and each sentence's place."""

    samples: np.ndarray
    utterances: tuple[Utterance, ...]

    @property
    def text(self) -> str:
        return " ".join(u.text for u in self.utterances)

    @property
    def duration(self) -> float:
        return self.samples.size / SAMPLE_RATE

    def wav_bytes(self) -> bytes:
        return wav_bytes(self.samples)


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


@cache
def speak(text: str, voice: str, words_per_minute: int) -> np.ndarray:
    """`text` spoken by espeak-ng, as 16 kHz float32 samples with the leading and trailing silence cut."""
    if not espeak_available():
        raise RuntimeError(f"`{ESPEAK}` is not installed (Debian: apt-get install espeak-ng)")
    wav = subprocess.run(
        [ESPEAK, "-v", voice, "-s", str(words_per_minute), "--stdout", text],
        check=True,
        capture_output=True,
    ).stdout
    with wave.open(io.BytesIO(wav)) as clip:
        rate = clip.getframerate()
        raw = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    samples = _resample(raw.astype(np.float32) / 32768.0, rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples


def _resample(samples: np.ndarray, rate: int) -> np.ndarray:
    if rate == SAMPLE_RATE:
        return samples
    # espeak-ng writes 22050 Hz; linear interpolation is plenty for speech below 8 kHz.
    positions = np.arange(0, samples.size * SAMPLE_RATE / rate) * rate / SAMPLE_RATE
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def journal_recording(
    seconds: float,
    *,
    seed: int = 0,
    long_sentences: int = 1,
    extra: tuple[tuple[str, np.ndarray], ...] = (),
) -> JournalRecording:
    """Different sentences with pauses of 0.2 to 2 s until about `seconds`, ending on speech.

    `long_sentences` run-on sentences (over 30 s each) are placed among them; `extra` adds real clips
    (text, 16 kHz float32 samples), e.g. the JFK recording. Sentences are spoken in order, then the
    list starts over with other voices; the last sentence ends at the last sample.
    """
    rng = random.Random(seed)
    pool = list(JOURNAL_SENTENCES)
    rng.shuffle(pool)
    inserts = {rng.randrange(1, 6): text for text in LONG_SENTENCES[:long_sentences]}
    clips = list(extra)
    spoken: list[tuple[str, np.ndarray]] = []
    total = 0.0
    index = 0
    while total < seconds:
        if index in inserts:
            text = inserts.pop(index)
            samples = speak(text, rng.choice(VOICES), rng.randint(135, 150))
        elif clips and index % 4 == 3:
            text, samples = clips.pop(0)
        else:
            text = pool[index % len(pool)]
            # Each pass over the sentences speaks them in other voices.
            voice = VOICES[(index + index // len(pool)) % len(VOICES)]
            samples = speak(text, voice, rng.randint(150, 190))
        spoken.append((text, samples))
        total += samples.size / SAMPLE_RATE + 1.1
        index += 1
    return join_with_pauses(spoken, rng)


def join_with_pauses(spoken: list[tuple[str, np.ndarray]], rng: random.Random) -> JournalRecording:
    """(text, samples) clips in order, separated by pauses of 0.2 to 2 s drawn from `rng`."""
    pieces: list[np.ndarray] = []
    utterances: list[Utterance] = []
    position = 0
    for number, (text, samples) in enumerate(spoken):
        if number:
            pause = int(rng.uniform(0.2, 2.0) * SAMPLE_RATE)
            pieces.append(np.zeros(pause, dtype=np.float32))
            position += pause
        pieces.append(samples.astype(np.float32))
        utterances.append(Utterance(text, position / SAMPLE_RATE, (position + samples.size) / SAMPLE_RATE))
        position += samples.size
    return JournalRecording(np.concatenate(pieces), tuple(utterances))


def wav_bytes(samples: np.ndarray) -> bytes:
    """16-bit PCM WAV of 16 kHz mono samples: int16 as they are, floats in [-1, 1] scaled."""
    pcm = samples if samples.dtype == np.int16 else (np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()
