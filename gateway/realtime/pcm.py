"""Base64 16-bit mono PCM from `input_audio_buffer.append` to Whisper's 16 kHz float32 samples."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING

import numpy as np

from gateway.errors import invalid_input
from samo.contracts.whisper import SAMPLE_RATE

if TYPE_CHECKING:
    import av


def pcm16(encoded: str) -> np.ndarray:
    """The int16 samples of base64 little-endian PCM; `invalid_input` naming `audio` otherwise."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_input("audio: not valid base64") from None
    if len(raw) % 2:
        raise invalid_input("audio: 16-bit PCM needs an even number of bytes")
    return np.frombuffer(raw, dtype="<i2")


class ToWhisperRate:
    """Samples at `rate` to float32 at 16 kHz, chunk after chunk, keeping the resampler's state across
    chunks (libswresample through PyAV, as file decoding does), so chunk edges leave no clicks or gaps."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        floats = samples.astype(np.float32) / 32768.0
        if self.rate == SAMPLE_RATE or samples.size == 0:
            return floats
        import av  # PyAV loads with the first audio, as for uploads

        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(floats.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = None
        out = [
            np.asarray(f.to_ndarray(), dtype=np.float32).reshape(-1) for f in self._resampler.resample(frame)
        ]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
