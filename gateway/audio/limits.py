"""Limits on uploaded audio, apart from the decoder so that settings import without PyAV."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_duration_s: float = 3600.0
    max_decode_samples: int = 3600 * 48_000 * 2
    """Input samples over all channels (sample rate x channels x seconds) decoded at most: the decoder's
    CPU budget. The default is an hour of 48 kHz stereo."""
