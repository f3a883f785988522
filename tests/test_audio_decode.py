"""The gateway's audio front end: files built here with PyAV's encoders, decoded by `decode_audio` (whole)
and `open_audio` (block by block)."""

from __future__ import annotations

import io
import logging
import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.audio.decode import (
    CORRUPT_MESSAGE,
    SAMPLE_RATE,
    UNSUPPORTED_MESSAGE,
    AudioLimits,
    DecodeCancelled,
    DecodedAudio,
    decode_audio,
    open_audio,
)
from gateway.errors import ErrorType, SamoError

JFK_WAV = Path(__file__).parent / "data" / "jfk.wav"
SIGNAL_S = 1.5
SOURCE_RATE = 44100
M4A = "mov,mp4,m4a,3gp,3g2,mj2"


def tone(seconds: float = SIGNAL_S, rate: int = SOURCE_RATE) -> np.ndarray:
    """440 Hz (louder, so it dominates the spectrum) plus 660 Hz; RMS 0.354."""
    t = np.arange(round(seconds * rate)) / rate
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)


def encoder_available(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except (av.error.FFmpegError, ValueError):
        return False
    return True


def encode(
    muxer: str,
    codec: str,
    rate: int,
    *,
    signal: np.ndarray | None = None,
    source_rate: int = SOURCE_RATE,
    channels: int = 2,
    codec_options: dict[str, str] | None = None,
    muxer_options: dict[str, str] | None = None,
    video: bool = False,
) -> bytes:
    """Encodes `signal` (mono, at `source_rate`; default the 1.5 s tone) on every channel."""
    mono = tone(rate=source_rate) if signal is None else signal.astype(np.float32)
    layout = "stereo" if channels == 2 else "mono"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer, options=muxer_options or {}) as output:
        if video:  # a video stream ahead of the audio: decoding must find the audio stream anyway
            picture = output.add_stream("mpeg4", rate=10)
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
        stream = output.add_stream(codec, rate=rate, layout=layout)
        stream.codec_context.time_base = Fraction(1, rate)
        if codec_options:
            stream.codec_context.options = codec_options
        source = av.AudioFrame.from_ndarray(np.stack([mono] * channels), format="fltp", layout=layout)
        source.sample_rate, source.pts = source_rate, 0
        resampler = av.AudioResampler(
            format=stream.codec_context.format,
            layout=layout,
            rate=rate,
            frame_size=stream.codec_context.frame_size or 1024,
        )
        pts = 0
        for frame in resampler.resample(source) + resampler.resample(None):
            frame.pts, frame.time_base = pts, Fraction(1, rate)
            pts += frame.samples
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
        if video:
            for i in range(round(SIGNAL_S * 10)):
                image = av.VideoFrame.from_ndarray(np.full((32, 32, 3), i * 8, np.uint8), format="rgb24")
                image.pts = i
                output.mux(picture.encode(image))
            output.mux(picture.encode(None))
    return buffer.getvalue()


@dataclass(frozen=True)
class Format:
    id: str
    muxer: str
    codec: str
    rate: int
    container: str
    decoder: str
    codec_options: dict[str, str] | None = None


VORBIS_ENCODER = "libvorbis" if encoder_available("libvorbis") else "vorbis"
FORMATS = [
    Format("wav", "wav", "pcm_s16le", 44100, "wav", "pcm_s16le"),
    Format("flac", "flac", "flac", 44100, "flac", "flac"),
    Format("mp3", "mp3", "libmp3lame", 44100, "mp3", "mp3float"),
    Format("ogg-opus", "ogg", "libopus", 48000, "ogg", "opus"),
    # FFmpeg's own Vorbis encoder (when libvorbis is missing) is marked experimental.
    Format("ogg-vorbis", "ogg", VORBIS_ENCODER, 44100, "ogg", "vorbis", {"strict": "experimental"}),
    Format("webm-opus", "webm", "libopus", 48000, "matroska,webm", "opus"),
    Format("m4a-aac", "ipod", "aac", 44100, M4A, "aac"),
]
FORMAT_PARAMS = [
    pytest.param(
        f,
        id=f.id,
        marks=pytest.mark.skipif(not encoder_available(f.codec), reason=f"no {f.codec} encoder"),
    )
    for f in FORMATS
]
_ENCODED: dict[str, bytes] = {}


def encoded(f: Format) -> bytes:
    if f.id not in _ENCODED:
        _ENCODED[f.id] = encode(f.muxer, f.codec, f.rate, codec_options=f.codec_options)
    return _ENCODED[f.id]


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def assert_well_formed(audio: DecodedAudio) -> None:
    assert isinstance(audio.samples, np.ndarray)
    assert audio.samples.dtype == np.float32
    assert audio.samples.ndim == 1
    assert audio.samples.size > 0
    assert np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() <= 1.0
    assert audio.duration_s == pytest.approx(audio.samples.size / SAMPLE_RATE)


def assert_is_the_tone(audio: DecodedAudio) -> None:
    peak = dominant_hz(audio.samples)
    assert min(abs(peak - 440), abs(peak - 660)) < 3, peak
    # Averaging two identical channels keeps the level (no +3 dB downmix), lossy codecs within 15%.
    assert rms(audio.samples[SAMPLE_RATE // 10 : -SAMPLE_RATE // 10]) == pytest.approx(0.354, rel=0.15)


def refused(
    data: bytes,
    error_type: ErrorType,
    caplog: pytest.LogCaptureFixture,
    limits: AudioLimits = AudioLimits(),
) -> str:
    """Decodes `data` expecting SamoError(error_type); checks that neither it nor the logs echo the file."""
    with caplog.at_level(logging.DEBUG, logger="gateway.audio"), pytest.raises(SamoError) as caught:
        decode_audio(data, limits)
    error = caught.value
    assert error.type is error_type
    assert_not_echoed(data, f"{error.message} {error} {error.args!r} {caplog.text}")
    return error.message


def assert_not_echoed(data: bytes, text: str) -> None:
    """No 16-byte run of the input's first 64 KiB (as text, or as Python's repr of bytes) appears in `text`."""
    data = data[: 64 * 1024]
    encoded_text = text.encode("utf-8", "replace")
    for start in range(0, len(data) - min(len(data), 16) + 1, 4) if data else ():
        window = data[start : start + 16]
        assert window not in encoded_text
        assert repr(window)[2:-1] not in text


@pytest.mark.parametrize("f", FORMAT_PARAMS)
def test_decodes_each_format_to_16k_mono(f: Format) -> None:
    audio = decode_audio(encoded(f))
    assert_well_formed(audio)
    assert (audio.container, audio.codec) == (f.container, f.decoder)
    assert audio.duration_s == pytest.approx(SIGNAL_S, abs=0.1)  # encoders pad a little
    assert_is_the_tone(audio)


def test_decodes_the_audio_stream_of_a_video_file() -> None:
    audio = decode_audio(encode("mp4", "aac", 44100, video=True))
    assert audio.container == M4A
    assert audio.codec == "aac"
    assert audio.duration_s == pytest.approx(SIGNAL_S, abs=0.1)
    assert_is_the_tone(audio)


@pytest.mark.parametrize(("rate", "channels"), [(8000, 1), (22050, 1), (44100, 2), (48000, 2), (96000, 2)])
def test_any_rate_and_layout_becomes_16k_mono(rate: int, channels: int) -> None:
    data = encode("wav", "pcm_s16le", rate, signal=tone(rate=rate), source_rate=rate, channels=channels)
    audio = decode_audio(data)
    assert_well_formed(audio)
    assert audio.samples.size == SIGNAL_S * SAMPLE_RATE  # exactly: the resampler's tail is kept
    assert_is_the_tone(audio)


def test_loud_stereo_downmix_is_not_clipped() -> None:
    loud = (0.9 * np.sin(2 * np.pi * 440 * np.arange(SOURCE_RATE) / SOURCE_RATE)).astype(np.float32)
    audio = decode_audio(encode("wav", "pcm_s16le", SOURCE_RATE, signal=loud))
    middle = audio.samples[1000:-1000]
    assert np.abs(middle).max() == pytest.approx(0.9, abs=0.01)  # summed at -3 dB it would clip at 1.27


def test_format_change_part_way() -> None:
    """Concatenated ADTS AAC streams: 44.1 kHz stereo, then 22.05 kHz mono."""
    first = encode("adts", "aac", 44100, signal=tone(0.75))
    second = encode("adts", "aac", 22050, signal=tone(0.75, 22050), source_rate=22050, channels=1)
    audio = decode_audio(first + second)
    assert_well_formed(audio)
    assert audio.duration_s == pytest.approx(SIGNAL_S, abs=0.15)
    assert_is_the_tone(audio)


def test_jfk_wav() -> None:
    audio = decode_audio(JFK_WAV.read_bytes())
    assert_well_formed(audio)
    assert (audio.container, audio.codec) == ("wav", "pcm_s16le")
    assert abs(audio.samples.size - 176_000) <= 4
    assert audio.duration_s == pytest.approx(11.0, abs=0.001)
    assert 0.01 < rms(audio.samples) < 0.5


@pytest.mark.parametrize(
    ("muxer", "codec", "rate"),
    [("wav", "pcm_s16le", 44100), ("flac", "flac", 44100), ("ogg", "libopus", 48000)],
)
def test_one_millisecond_clip_is_valid(muxer: str, codec: str, rate: int) -> None:
    clip = tone(0.001, rate)
    audio = decode_audio(encode(muxer, codec, rate, signal=clip, source_rate=rate))
    assert_well_formed(audio)
    assert audio.samples.size == 16
    assert audio.duration_s == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("muxer", "codec", "rate"),
    [
        ("wav", "pcm_s16le", 44100),
        ("flac", "flac", 44100),
        ("mp3", "libmp3lame", 44100),
        ("ogg", "libopus", 48000),
    ],
)
def test_silence_decodes_to_silence(muxer: str, codec: str, rate: int) -> None:
    silence = np.zeros(2 * rate, np.float32)
    audio = decode_audio(encode(muxer, codec, rate, signal=silence, source_rate=rate))
    assert_well_formed(audio)
    assert audio.duration_s == pytest.approx(2.0, abs=0.1)
    assert np.abs(audio.samples).max() < 1e-3


def test_empty_file(caplog: pytest.LogCaptureFixture) -> None:
    assert refused(b"", ErrorType.INVALID_INPUT, caplog) == "audio file is empty"


def test_random_bytes(caplog: pytest.LogCaptureFixture) -> None:
    data = np.random.default_rng(1234).bytes(4096)
    assert refused(data, ErrorType.UNSUPPORTED_MEDIA, caplog) == UNSUPPORTED_MESSAGE
    assert (
        UNSUPPORTED_MESSAGE == "file is not audio in a supported format (wav, flac, mp3, ogg/opus, webm, m4a)"
    )


def test_text_file(caplog: pytest.LogCaptureFixture) -> None:
    data = b"hello, this is not audio\n" * 100
    message = refused(data, ErrorType.UNSUPPORTED_MEDIA, caplog)
    assert message == UNSUPPORTED_MESSAGE
    assert "hello" not in message
    assert "hello" not in caplog.text


def test_video_without_audio(caplog: pytest.LogCaptureFixture) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            image = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            image.pts = i
            output.mux(stream.encode(image))
        output.mux(stream.encode(None))
    assert refused(buffer.getvalue(), ErrorType.UNSUPPORTED_MEDIA, caplog) == UNSUPPORTED_MESSAGE


def test_concat_script_cannot_read_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """FFmpeg's ffconcat demuxer opens the files a script names; the demuxer allow-list refuses it."""
    (tmp_path / "private.wav").write_bytes(encoded(FORMATS[0]))
    monkeypatch.chdir(tmp_path)
    script = b"ffconcat version 1.0\nfile private.wav\n"
    try:  # without the allow-list, PyAV reads the local file named in the upload
        with av.open(io.BytesIO(script)) as container:
            assert container.format.name == "concat"
            assert sum(frame.samples for frame in container.decode(audio=0)) > 0
    except av.error.FFmpegError:
        pass  # a build of FFmpeg that refuses on its own
    assert refused(script, ErrorType.UNSUPPORTED_MEDIA, caplog) == UNSUPPORTED_MESSAGE


def test_wav_header_cut_to_30_bytes(caplog: pytest.LogCaptureFixture) -> None:
    """RIFF/WAVE signature but the fmt chunk is cut: recognised, so truncated rather than unsupported."""
    data = encoded(FORMATS[0])[:30]
    assert refused(data, ErrorType.INVALID_INPUT, caplog) == CORRUPT_MESSAGE
    assert CORRUPT_MESSAGE == "audio could not be decoded: the file is truncated or corrupt"


def test_wav_cut_in_the_middle_returns_the_decoded_prefix() -> None:
    full = decode_audio(encoded(FORMATS[0]))
    data = encoded(FORMATS[0])
    prefix = decode_audio(data[: 44 + (len(data) - 44) // 2])  # the header still promises 1.5 s
    assert_well_formed(prefix)
    assert prefix.duration_s == pytest.approx(SIGNAL_S / 2, abs=0.01)
    # Same samples as the whole file's, up to the resampler's few samples at the cut.
    n = prefix.samples.size - 32
    np.testing.assert_allclose(prefix.samples[:n], full.samples[:n], atol=1e-4)


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("f", FORMAT_PARAMS)
def test_truncated_files_give_a_prefix_or_the_corrupt_error(f: Format, fraction: float) -> None:
    data = encoded(f)
    try:
        audio = decode_audio(data[: int(len(data) * fraction)])
    except SamoError as error:
        assert (error.type, error.message) == (ErrorType.INVALID_INPUT, CORRUPT_MESSAGE)
    else:
        assert_well_formed(audio)
        assert audio.duration_s < SIGNAL_S * fraction + 0.1


@pytest.mark.parametrize(
    ("f", "fraction", "prefix_s"),
    [
        (FORMATS[2], 0.2, (0.1, 0.4)),
        (FORMATS[2], 0.5, (0.6, 0.85)),
        (FORMATS[1], 0.5, (0.3, 0.75)),
        # FFmpeg's FLAC muxer leaves 8 KiB of padding in the header: 20% of this file ends inside it.
        (FORMATS[1], 0.2, None),
    ],
    ids=["mp3-20%", "mp3-50%", "flac-50%", "flac-20%"],
)
def test_truncated_mp3_and_flac(
    f: Format, fraction: float, prefix_s: tuple[float, float] | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Cut after the header: the audio up to the cut. Cut inside the header: refused as truncated."""
    data = encoded(f)
    cut = data[: int(len(data) * fraction)]
    if prefix_s is None:
        assert refused(cut, ErrorType.INVALID_INPUT, caplog) == CORRUPT_MESSAGE
    else:
        audio = decode_audio(cut)
        assert_well_formed(audio)
        assert prefix_s[0] < audio.duration_s < prefix_s[1]
        assert_is_the_tone(audio)


@pytest.mark.parametrize("f", FORMAT_PARAMS)
def test_damaged_files_never_raise_anything_else(f: Format) -> None:
    data = encoded(f)
    rng = np.random.default_rng(7)
    for _ in range(12):
        damaged = bytearray(data)
        start = int(rng.integers(0, len(damaged)))
        length = int(rng.integers(1, 2000))
        damaged[start : start + length] = rng.bytes(len(damaged[start : start + length]))
        try:
            audio = decode_audio(bytes(damaged))
        except SamoError as error:
            assert error.type in (ErrorType.INVALID_INPUT, ErrorType.UNSUPPORTED_MEDIA)
            assert error.message in (CORRUPT_MESSAGE, UNSUPPORTED_MESSAGE)
        else:
            assert_well_formed(audio)


def test_over_max_bytes(caplog: pytest.LogCaptureFixture) -> None:
    data = encoded(FORMATS[0])  # 258 KiB
    message = refused(data, ErrorType.TOO_LARGE, caplog, AudioLimits(max_bytes=100 * 1024))
    assert message == "audio file is 0.3 MB; the limit is 0.1 MB"
    assert decode_audio(data, AudioLimits(max_bytes=len(data))).duration_s == pytest.approx(SIGNAL_S)


def test_default_max_bytes_is_checked_before_parsing(caplog: pytest.LogCaptureFixture) -> None:
    data = b"RIFF" + bytes(26 * 1024 * 1024)
    message = refused(data, ErrorType.TOO_LARGE, caplog)
    assert message == "audio file is 26.0 MB; the limit is 25.0 MB"


@pytest.mark.parametrize("f", FORMAT_PARAMS)
def test_over_max_duration_declared(f: Format, caplog: pytest.LogCaptureFixture) -> None:
    message = refused(encoded(f), ErrorType.TOO_LARGE, caplog, AudioLimits(max_duration_s=1.0))
    assert message == "audio is 1.5 s long; the limit is 1 s"


def test_over_max_duration_while_decoding_a_stream_without_duration(caplog: pytest.LogCaptureFixture) -> None:
    """A live WebM (as MediaRecorder writes) declares no duration: decoding stops once past the limit."""
    data = encode("webm", "libopus", 48000, muxer_options={"live": "1"})
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is None
    assert decode_audio(data).duration_s == pytest.approx(SIGNAL_S, abs=0.1)
    message = refused(data, ErrorType.TOO_LARGE, caplog, AudioLimits(max_duration_s=1.0))
    match = re.fullmatch(r"audio is (\d+\.\d) s long; the limit is 1 s", message)
    assert match is not None, message
    assert 1.0 < float(match.group(1)) <= 2.0  # extrapolated from the share of the file read
    assert "decoded" not in caplog.text  # stopped before the end


def test_blocks_are_bounded_and_join_into_the_whole_decode() -> None:
    long_tone = tone(seconds=25.0, rate=SOURCE_RATE)
    data = encode("flac", "flac", SOURCE_RATE, signal=long_tone)
    reader = open_audio(data)
    try:
        blocks = list(reader.blocks(block_samples=4 * SAMPLE_RATE))
    finally:
        reader.close()
    assert all(block.size == 4 * SAMPLE_RATE for block in blocks[:-1])
    assert 0 < blocks[-1].size <= 4 * SAMPLE_RATE
    whole = decode_audio(data)
    assert np.array_equal(np.concatenate(blocks), whole.samples)
    assert reader.decoded_s == whole.duration_s == pytest.approx(25.0, abs=1e-3)


def test_cancelled_decoding_stops_at_the_next_packet() -> None:
    cancelled = threading.Event()
    reader = open_audio(encode("flac", "flac", SOURCE_RATE, signal=tone(seconds=30.0)), cancelled=cancelled)
    blocks = reader.blocks(block_samples=SAMPLE_RATE)
    first = next(blocks)
    cancelled.set()
    with pytest.raises(DecodeCancelled):
        next(blocks)
    assert first.size == SAMPLE_RATE and reader.decoded_s < 2.0
    reader.close()
    reader.close()  # closing twice (the service closes from a worker thread) is harmless


def test_decoding_work_is_bounded_by_rate_times_channels_times_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stereo_48k = encode("wav", "pcm_s16le", 48000, source_rate=48000, signal=tone(rate=48000))
    limits = AudioLimits(max_decode_samples=100_000)  # 1.5 s x 48 kHz x 2 channels = 144,000
    message = refused(stereo_48k, ErrorType.TOO_LARGE, caplog, limits)
    assert message == (
        "audio needs 144,000 input samples decoded (sample rate x channels x seconds); the limit is 100,000"
    )
    mono_16k = encode("wav", "pcm_s16le", 16000, source_rate=16000, channels=1, signal=tone(rate=16000))
    assert decode_audio(mono_16k, limits).duration_s == pytest.approx(SIGNAL_S, abs=1e-3)  # 24,000


def test_decoding_work_is_counted_while_decoding_a_stream_without_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = encode("webm", "libopus", 48000, muxer_options={"live": "1"})  # declares no duration
    refused(data, ErrorType.TOO_LARGE, caplog, AudioLimits(max_decode_samples=48000))
    assert "decoded" not in caplog.text  # stopped before the end
