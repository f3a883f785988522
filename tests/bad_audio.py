"""A corpus of bad audio, built in the test (nothing large is committed): files that are empty, random,
cut short, misnamed, with absurd headers, decode bombs, and a video without sound.

Each entry says what a careful server may answer: the statuses allowed and, for refusals, the error
types. Bombs are small files that would cost far more than their size to decode.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from tests.speech import RATE, jfk_samples, wav_bytes


@dataclass(frozen=True)
class BadAudio:
    name: str
    """The upload's file name (the extension may lie)."""
    build: Callable[[], bytes]
    statuses: frozenset[int]
    """What a careful server may answer."""
    error_types: frozenset[str] = frozenset()
    """For 4xx answers, the error types allowed."""


def wav_header(
    *, rate: int, channels: int, bits: int = 16, data_bytes: int, riff_bytes: int | None = None
) -> bytes:
    """A canonical 44-byte PCM WAV header; the sizes may lie about what follows."""
    block_align = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", riff_bytes if riff_bytes is not None else 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * block_align) & 0xFFFFFFFF, block_align, bits)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def speech(seconds: float = 3.0) -> np.ndarray:
    return jfk_samples()[: int(seconds * RATE)]


def encode(fmt: str, codec: str, samples: np.ndarray, rate: int = RATE) -> bytes:
    """Mono int16 `samples` at `rate`, encoded with PyAV into container `fmt`."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono")
        stream.codec_context.time_base = Fraction(1, rate)
        frame_size = stream.codec_context.frame_size or 4096
        resampler = av.AudioResampler(
            format=stream.codec_context.format, layout="mono", rate=rate, frame_size=frame_size
        )
        source = av.AudioFrame.from_ndarray(samples[None, :], format="s16", layout="mono")
        source.sample_rate, source.pts = rate, 0
        pts = 0
        for frame in resampler.resample(source) + resampler.resample(None):
            frame.pts, frame.time_base = pts, Fraction(1, rate)
            pts += frame.samples
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def silent_flac(seconds: float, rate: int) -> bytes:
    """`seconds` of digital silence as FLAC, encoded one block at a time (silence compresses to a few
    bytes per block, so hours fit in a few hundred KB)."""
    buffer = io.BytesIO()
    block = np.zeros((1, 4608), dtype=np.int16)
    with av.open(buffer, "w", format="flac") as output:
        stream = output.add_stream("flac", rate=rate, layout="mono")
        stream.codec_context.time_base = Fraction(1, rate)
        for pts in range(0, int(seconds * rate), block.shape[1]):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = rate, pts, Fraction(1, rate)
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def without_declared_length(flac: bytes) -> bytes:
    """The FLAC file with STREAMINFO's total-samples field zeroed ("unknown"): the decoder can only find
    the duration by decoding it all."""
    data = bytearray(flac)
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    # STREAMINFO body starts at byte 8; total samples: the low 4 bits of byte 8+13 and bytes 8+14..17.
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = b"\x00\x00\x00\x00"
    return bytes(data)


def video_without_audio() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        picture = output.add_stream("mpeg4", rate=10)
        picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        for i in range(20):
            image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 8, np.uint8), format="rgb24")
            image.pts = i
            output.mux(picture.encode(image))
        output.mux(picture.encode(None))
    return buffer.getvalue()


def cut(data: bytes, fraction: float) -> bytes:
    return data[: max(1, int(len(data) * fraction))]


OK = frozenset({200})
REFUSED = frozenset({413, 415, 422})
TRANSCRIPT_OR_REFUSED = OK | REFUSED
BAD_MEDIA = frozenset({"unsupported_media", "invalid_input"})
TOO_LARGE = frozenset({"too_large"})


def corpus(max_duration_s: float) -> list[BadAudio]:
    """Every bad file, for a server whose duration limit is `max_duration_s`."""
    mp3 = lambda: encode("mp3", "libmp3lame", speech())  # noqa: E731
    flac = lambda: encode("flac", "flac", speech())  # noqa: E731
    ogg = lambda: encode("ogg", "libopus", np.repeat(speech(), 3), rate=48000)  # noqa: E731
    wav = lambda: wav_bytes(speech())  # noqa: E731
    data = speech(1.0).tobytes()
    bomb_s = max_duration_s + 600
    entries = [
        BadAudio("empty.wav", lambda: b"", frozenset({422}), frozenset({"invalid_input"})),
        BadAudio("one-byte.mp3", lambda: b"\x00", REFUSED, BAD_MEDIA),
        BadAudio("random-4k.wav", lambda: os.urandom(4096), frozenset({415}), BAD_MEDIA),
        BadAudio("random-1m.flac", lambda: os.urandom(1 << 20), frozenset({415}), BAD_MEDIA),
        BadAudio("diary.ogg", lambda: b"dear diary, today I felt... " * 200, frozenset({415}), BAD_MEDIA),
        # Wrong extensions: the content decides, not the name.
        BadAudio("speech.mp3", flac, OK),
        BadAudio("speech.wav", mp3, OK),
        BadAudio("speech", wav, OK),
        BadAudio("speech.flac.exe", ogg, OK),
        # Absurd headers over one real second of samples.
        BadAudio(
            # 16,000 samples at 1 Hz: 16,000 s declared.
            "rate-1hz.wav",
            lambda: wav_header(rate=1, channels=1, data_bytes=len(data)) + data,
            frozenset({413}),
            TOO_LARGE,
        ),
        BadAudio(
            "rate-4ghz.wav",
            lambda: wav_header(rate=0xFFFFFFFF, channels=1, data_bytes=len(data)) + data,
            REFUSED,
            BAD_MEDIA | TOO_LARGE,
        ),
        BadAudio(
            "rate-0.wav",
            lambda: wav_header(rate=0, channels=1, data_bytes=len(data)) + data,
            REFUSED,
            BAD_MEDIA,
        ),
        BadAudio(
            "channels-255.wav",
            lambda: wav_header(rate=RATE, channels=255, data_bytes=len(data)) + data,
            TRANSCRIPT_OR_REFUSED,
            BAD_MEDIA | TOO_LARGE,
        ),
        BadAudio(
            "channels-0.wav",
            lambda: wav_header(rate=RATE, channels=0, data_bytes=len(data)) + data,
            REFUSED,
            BAD_MEDIA,
        ),
        BadAudio(
            "bits-7.wav",
            lambda: wav_header(rate=RATE, channels=1, bits=7, data_bytes=len(data)) + data,
            REFUSED | OK,
        ),
        # A header claiming 4 GB of data over one real second: the real second, or refused as too long.
        BadAudio(
            "claims-4gb.wav",
            lambda: wav_header(rate=RATE, channels=1, data_bytes=0xFFFFFFFF, riff_bytes=0xFFFFFFFF) + data,
            TRANSCRIPT_OR_REFUSED,
            TOO_LARGE | BAD_MEDIA,
        ),
        # Decode bombs: longer than the limit, in a few hundred KB.
        BadAudio("bomb-declared.flac", lambda: silent_flac(bomb_s, 8000), frozenset({413}), TOO_LARGE),
        BadAudio(
            "bomb-undeclared.flac",
            lambda: without_declared_length(silent_flac(bomb_s, 8000)),
            frozenset({413}),
            TOO_LARGE,
        ),
        BadAudio("video-no-audio.mp4", video_without_audio, frozenset({415, 422}), BAD_MEDIA),
    ]
    for fraction in (0.02, 0.5):
        for name, build in (("wav", wav), ("flac", flac), ("ogg", ogg), ("mp3", mp3)):
            entries.append(
                BadAudio(
                    f"cut-{int(fraction * 100)}pc.{name}",
                    lambda build=build, fraction=fraction: cut(build(), fraction),
                    TRANSCRIPT_OR_REFUSED,
                    BAD_MEDIA,
                )
            )
    return entries
