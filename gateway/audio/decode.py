"""Decode uploaded audio files into 16 kHz mono float32 samples for the speech models.

Why PyAV: its wheels bundle FFmpeg with the decoders that journal recordings arrive in (PCM WAV,
FLAC, MP3, Opus and Vorbis in Ogg, Opus in WebM as browsers' ``MediaRecorder`` writes it, AAC in
M4A/MP4, and the audio track of common video containers), so the gateway reads them from memory with no
system ``ffmpeg`` binary, no temporary files and no subprocess per request.

Limits, checked in this order, each failing with a :class:`~gateway.errors.SamoError`:

- the file must not be empty (``invalid_input``) and at most ``AudioLimits.max_bytes`` (``too_large``),
  checked before anything is parsed;
- it must open as one of the allowed containers (``AUDIO_DEMUXERS``) and hold an audio stream
  (``unsupported_media``). The allow-list is passed to FFmpeg as ``format_whitelist``: FFmpeg also
  probes scripts and playlists (``ffconcat``, HLS) that open *other* files, so without it an upload
  could make the gateway read media files from its own disk;
- its duration must be at most ``AudioLimits.max_duration_s`` (``too_large``): the duration the
  container declares (or FFmpeg estimates from the bit rate) is checked before decoding, and the decoded
  duration again while decoding, which stops as soon as the limit is passed (a WebM from
  ``MediaRecorder`` declares no duration; the length reported then is extrapolated from the share of
  the file read);
- something must decode (``invalid_input``).

Truncated and damaged files:

- A file cut after its header (a WAV, FLAC, MP3 or WebM whose upload stopped part-way) decodes up to the
  cut and that prefix is returned: ``duration_s`` is then shorter than the duration the header
  declares. An Ogg file loses the whole page the cut falls in (FFmpeg checks each page's CRC; encoders
  write pages of up to about a second).
- Packets that fail to decode are skipped, leaving a short gap (as the ``ffmpeg`` command does), up to
  ``MAX_BAD_PACKETS``; a demuxing error, or more bad packets than that, stops decoding there.
- The file is refused as ``invalid_input`` ("truncated or corrupt") when nothing decodes, when decoding
  hit errors and less than ``MIN_DAMAGED_DECODE_S`` came out, or when the container is recognised (it
  ran out of data while its header was read, or it starts with the signature of a WAV, FLAC, Ogg,
  WebM/Matroska, MP4/M4A or ID3-tagged MP3 file) but cannot be opened: a WAV cut inside its ``fmt``
  chunk, an M4A whose index (``moov``, often written last) was cut off.

Errors raised by PyAV are caught here, at this one boundary. Journal audio is private: neither error
messages nor logs contain any byte of the file, or PyAV's own messages about it; logs (debug level
only) hold sizes, formats, codecs, sample rates and durations.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.error
import numpy as np

from gateway.audio.limits import AudioLimits as AudioLimits
from gateway.errors import ErrorType, SamoError
from samo.contracts.whisper import SAMPLE_RATE

logger = logging.getLogger(__name__)

# decode_audio's output rate is SAMPLE_RATE (Hz), the rate the Whisper contract expects.

MAX_BAD_PACKETS = 16
"""Packets that fail to decode and are skipped before decoding stops."""

MIN_DAMAGED_DECODE_S = 0.1
"""Least audio (s) a file that hit decoding errors must yield to be returned rather than refused."""

AUDIO_DEMUXERS = (
    # audio files
    "wav", "w64", "flac", "mp3", "ogg", "aac", "loas", "aiff", "caf", "amr", "amrnb", "amrwb", "au",
    "ac3", "eac3", "dts", "wv", "ape", "tta", "mpc", "mpc8", "tak", "voc", "xwma", "gsm", "sox",
    "ircam", "nistsphere",
    # containers that also hold video (their first audio stream is decoded)
    "matroska", "webm", "mov", "mp4", "avi", "asf", "flv", "mpegts", "mpeg", "nut",
)  # fmt: skip
"""FFmpeg demuxers that may open an upload. FFmpeg matches each part of a demuxer's name
(``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``) against this list."""

UNSUPPORTED_MESSAGE = "file is not audio in a supported format (wav, flac, mp3, ogg/opus, webm, m4a)"
CORRUPT_MESSAGE = "audio could not be decoded: the file is truncated or corrupt"

# What PyAV raises on odd input: FFmpegError and its subclasses (InvalidDataError, EOFError,
# PermissionError...), and ValueError / IndexError / UnicodeDecodeError from its Python layer.
_PYAV_ERRORS: tuple[type[Exception], ...] = (av.error.FFmpegError, ValueError, IndexError, OSError)

# ISO BMFF brands of still images, which also start with "ftyp".
_IMAGE_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis")

_MB = 1024 * 1024


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray
    """float32, mono, ``SAMPLE_RATE`` Hz, values in [-1, 1]."""
    duration_s: float
    """``len(samples) / SAMPLE_RATE``: what was decoded, shorter than declared for a truncated file."""
    container: str
    """PyAV's name of the demuxer, e.g. ``"wav"``, ``"ogg"``, ``"matroska,webm"``."""
    codec: str
    """Decoder of the audio stream, e.g. ``"pcm_s16le"``, ``"opus"``, ``"aac"``."""


def decode_audio(data: bytes, limits: AudioLimits = AudioLimits()) -> DecodedAudio:
    """Decode an audio file held in memory to 16 kHz mono float32 samples.

    Raises :class:`SamoError` (``invalid_input``, ``too_large`` or ``unsupported_media``) as described
    in the module docstring. A truncated file returns the audio before the cut.
    """
    size = len(data)
    if size == 0:
        raise SamoError(ErrorType.INVALID_INPUT, "audio file is empty")
    if size > limits.max_bytes:
        raise SamoError(
            ErrorType.TOO_LARGE,
            f"audio file is {size / _MB:.1f} MB; the limit is {limits.max_bytes / _MB:.1f} MB",
        )
    try:
        container = av.open(
            io.BytesIO(data),
            mode="r",
            options={"format_whitelist": ",".join(AUDIO_DEMUXERS)},
            metadata_errors="ignore",
        )
    except _PYAV_ERRORS as error:
        recognised = isinstance(error, av.error.EOFError) or _has_media_signature(data)
        logger.debug(
            "audio of %d bytes did not open (%s, recognised: %s)", size, type(error).__name__, recognised
        )
        if recognised:
            raise SamoError(ErrorType.INVALID_INPUT, CORRUPT_MESSAGE) from None
        raise SamoError(ErrorType.UNSUPPORTED_MEDIA, UNSUPPORTED_MESSAGE) from None
    with container:
        return _decode_container(container, size, limits)


def _has_media_signature(data: bytes) -> bool:
    """Whether the file starts like one of the common formats, so failing to open it means it is damaged."""
    head = data[:12]
    return (
        (head[:4] in (b"RIFF", b"RF64") and head[8:12] in (b"WAVE", b"AVI "))
        or head[:4] in (b"fLaC", b"OggS", b"\x1a\x45\xdf\xa3")  # FLAC, Ogg, EBML (WebM / Matroska)
        or (head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS)  # MP4 / M4A / MOV / 3GP
        or head[:3] == b"ID3"  # MP3 with an ID3v2 tag
    )


def _decode_container(container: av.container.InputContainer, size: int, limits: AudioLimits) -> DecodedAudio:
    format_name = container.format.name
    audio_streams = container.streams.audio
    if not audio_streams or audio_streams[0].codec_context is None:
        logger.debug("%s container of %d bytes has no decodable audio stream", format_name, size)
        raise SamoError(ErrorType.UNSUPPORTED_MEDIA, UNSUPPORTED_MESSAGE)
    stream = audio_streams[0]
    codec = stream.codec_context.name

    declared = _declared_duration(container, stream)
    logger.debug(
        "decoding %d bytes: container %s, codec %s, %s Hz, %s channels, declared %s s",
        size, format_name, codec, stream.codec_context.sample_rate, stream.codec_context.channels,
        "unknown" if declared is None else f"{declared:.3f}",
    )  # fmt: skip
    if declared is not None and declared > limits.max_duration_s:
        raise _too_long(declared, limits)

    output = _Mono16k()
    input_s = 0.0  # decoded duration at the input's own rate
    bytes_read = 0
    bad_packets = 0
    errors = False
    for packet in _packets(container, stream):
        if packet is None:  # the demuxer failed: keep what came before
            errors = True
            break
        bytes_read += packet.size
        try:
            for frame in packet.decode():
                if frame.samples <= 0 or frame.sample_rate <= 0:
                    continue
                input_s += frame.samples / frame.sample_rate
                if input_s > limits.max_duration_s:  # checked before resampling: memory stays bounded
                    # The rest of the file is not read: extrapolate its length from the share read.
                    estimate = input_s * size / bytes_read if bytes_read else input_s
                    raise _too_long(max(input_s, estimate), limits)
                output.add(frame)
        except _PYAV_ERRORS as error:
            errors = True
            bad_packets += 1
            logger.debug(
                "skipped a %d-byte packet that failed to decode (%s)", packet.size, type(error).__name__
            )
            if bad_packets > MAX_BAD_PACKETS:
                break

    try:
        samples = output.finish()
    except _PYAV_ERRORS as error:
        logger.debug("resampler failed to flush (%s)", type(error).__name__)
        errors = True
        samples = output.samples()
    duration = samples.size / SAMPLE_RATE
    logger.debug(
        "decoded %.3f s from %s/%s, %d bad packets%s",
        duration, format_name, codec, bad_packets, ", with errors" if errors else "",
    )  # fmt: skip
    if samples.size == 0 or (errors and duration < MIN_DAMAGED_DECODE_S):
        raise SamoError(ErrorType.INVALID_INPUT, CORRUPT_MESSAGE)
    if duration > limits.max_duration_s:
        raise _too_long(duration, limits)
    return DecodedAudio(samples=samples, duration_s=duration, container=format_name, codec=codec)


def _packets(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.Packet | None]:
    """The stream's packets, ending with the decoder's flush packet; ``None`` and stop on a demuxing error."""
    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            return
        except _PYAV_ERRORS as error:
            logger.debug("demuxing stopped (%s)", type(error).__name__)
            yield None
            return
        yield packet


def _declared_duration(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The audio stream's duration as the container declares or FFmpeg estimates it, in seconds."""
    if stream.duration is not None and stream.duration > 0 and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def _too_long(duration_s: float, limits: AudioLimits) -> SamoError:
    return SamoError(
        ErrorType.TOO_LARGE, f"audio is {duration_s:.1f} s long; the limit is {limits.max_duration_s:.0f} s"
    )


class _Mono16k:
    """Resamples decoded frames to mono float32 at 16 kHz and gathers them.

    - ``rematrix_maxval=1`` makes the downmix average the channels: by default libswresample adds them
      at -3 dB each for float output, which takes in-phase stereo to 1.41 times full scale.
    - Before flushing, the resampler is fed silence and its output is cut to the input's length:
      flushing alone loses the last few milliseconds, and all of a clip shorter than the filter's
      delay (a 1 ms clip at 44.1 kHz comes out empty).
    - A stream whose sample rate, format or layout changes part-way (possible in MP3 and AAC) gets a
      new resampler from there.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []
        self._resampler: av.AudioResampler | None = None
        self._template: av.AudioFrame | None = None  # last input frame of the current resampler
        self._segment_start = 0  # index in _chunks where the current resampler's output starts
        self._segment_input = 0  # samples fed to the current resampler

    def add(self, frame: av.AudioFrame) -> None:
        """Resamples ``frame``, which holds samples and has a sample rate."""
        if (
            self._resampler is not None
            and self._template is not None
            and not _same_format(frame, self._template)
        ):
            self._end_segment()
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=SAMPLE_RATE, options={"rematrix_maxval": "1.0"}
            )
        self._keep(self._resampler.resample(frame))
        self._template = frame
        self._segment_input += frame.samples

    def finish(self) -> np.ndarray:
        self._end_segment()
        return self.samples()

    def samples(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        samples = np.concatenate(self._chunks)
        # Lossy decoders (AAC, Opus, MP3) overshoot full scale slightly, and damaged packets can
        # decode to non-finite values: keep the documented range.
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(samples, -1.0, 1.0, out=samples)
        return samples

    def _keep(self, frames: list[av.AudioFrame]) -> None:
        for frame in frames:
            # Packed float mono: shape (1, samples). Copied, since PyAV may reuse a frame's buffer.
            self._chunks.append(np.array(frame.to_ndarray(), dtype=np.float32, copy=True).reshape(-1))

    def _end_segment(self) -> None:
        resampler, template = self._resampler, self._template
        self._resampler = self._template = None
        if resampler is None or template is None:
            return
        rate = template.sample_rate
        self._keep(resampler.resample(_silence_like(template, max(1024, rate // 10))))
        self._keep(resampler.resample(None))
        expected = -(-self._segment_input * SAMPLE_RATE // rate)  # ceil: a 1-sample clip keeps 1 sample
        segment = self._chunks[self._segment_start :]
        if segment:
            self._chunks[self._segment_start :] = [np.concatenate(segment)[:expected]]
        self._segment_start = len(self._chunks)
        self._segment_input = 0


def _same_format(frame: av.AudioFrame, template: av.AudioFrame) -> bool:
    return (
        frame.format.name == template.format.name
        and frame.layout == template.layout
        and frame.sample_rate == template.sample_rate
    )


def _silence_like(template: av.AudioFrame, samples: int) -> av.AudioFrame:
    """A frame of zeros in the template's sample format, layout and rate."""
    frame = av.AudioFrame(format=template.format.name, layout=template.layout, samples=samples)
    frame.sample_rate = template.sample_rate
    frame.pts = None
    for plane in frame.planes:
        plane.update(bytes(plane.buffer_size))
    return frame
