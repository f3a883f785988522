"""Decode uploaded audio files into 16 kHz mono float32 samples for the speech models, block by block.

Memory does not grow with the audio's duration: :func:`open_audio` returns an :class:`AudioReader`
whose :meth:`~AudioReader.blocks` yields the audio a few seconds at a time, so a caller that keeps
only what it needs (the transcription service keeps about a minute and a half) can take an hour-long
file in a few megabytes. :func:`decode_audio` gathers every block, for short clips and tests.

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
- its decoding work (input samples over all channels: sample rate x channels x seconds) must stay
  within ``AudioLimits.max_decode_samples`` (``too_large``), checked from the declared duration before
  decoding and counted while decoding: this bounds the CPU one upload can take (an hour of 384 kHz,
  8-channel audio is refused although its duration is allowed);
- something must decode (``invalid_input``).

Decoding runs in a worker thread (the caller's), and stops between two packets once the
``cancelled`` event passed to :func:`open_audio` is set (the client left or the deadline passed),
raising :class:`DecodeCancelled`.

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

import enum
import io
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import av
import av.container
import av.error
import numpy as np

from gateway.audio.allocator import return_large_blocks_to_the_os
from gateway.audio.limits import AudioLimits as AudioLimits
from gateway.errors import ErrorType, SamoError
from samo.contracts.whisper import SAMPLE_RATE

logger = logging.getLogger(__name__)

# The output rate is SAMPLE_RATE (Hz), the rate the Whisper contract expects.

MAX_BAD_PACKETS = 16
"""Packets that fail to decode and are skipped before decoding stops."""

MIN_DAMAGED_DECODE_S = 0.1
"""Least audio (s) a file that hit decoding errors must yield to be returned rather than refused."""

BLOCK_SAMPLES = 10 * SAMPLE_RATE
"""Samples per block :meth:`AudioReader.blocks` yields (the last one is shorter): 10 s, 640 KB."""

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


class DecodeCancelled(Exception):
    """Decoding stopped because the caller set the ``cancelled`` event."""


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
    """Decode a whole audio file held in memory to 16 kHz mono float32 samples.

    Raises :class:`SamoError` (``invalid_input``, ``too_large`` or ``unsupported_media``) as described
    in the module docstring. A truncated file returns the audio before the cut.
    """
    reader = open_audio(data, limits)
    try:
        blocks = list(reader.blocks())
    finally:
        reader.close()
    samples = np.concatenate(blocks)
    return DecodedAudio(
        samples=samples, duration_s=reader.decoded_s, container=reader.container, codec=reader.codec
    )


def open_audio(
    data: bytes, limits: AudioLimits = AudioLimits(), cancelled: threading.Event | None = None
) -> AudioReader:
    """Open an audio file held in memory and check what can be checked before decoding (size,
    container, audio stream, declared duration and decoding work)."""
    return_large_blocks_to_the_os()
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
    try:
        return AudioReader(container, size, limits, cancelled or threading.Event())
    except BaseException:
        container.close()
        raise


def _has_media_signature(data: bytes) -> bool:
    """Whether the file starts like one of the common formats, so failing to open it means it is damaged."""
    head = data[:12]
    return (
        (head[:4] in (b"RIFF", b"RF64") and head[8:12] in (b"WAVE", b"AVI "))
        or head[:4] in (b"fLaC", b"OggS", b"\x1a\x45\xdf\xa3")  # FLAC, Ogg, EBML (WebM / Matroska)
        or (head[4:8] == b"ftyp" and head[8:12] not in _IMAGE_BRANDS)  # MP4 / M4A / MOV / 3GP
        or head[:3] == b"ID3"  # MP3 with an ID3v2 tag
    )


class AudioReader:
    """An opened upload's first audio stream, decoded on demand into 16 kHz mono float32 blocks.

    Not thread-safe, but may move between threads: :meth:`blocks` and :meth:`close` hold one lock, so
    a close from another thread waits for the packet being decoded (decoding stops at the next packet
    once ``cancelled`` is set).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        size: int,
        limits: AudioLimits,
        cancelled: threading.Event,
    ) -> None:
        self._container = container
        self._size = size
        self._limits = limits
        self._cancelled = cancelled
        self._lock = threading.Lock()
        self.container: str = container.format.name
        """PyAV's name of the demuxer, e.g. ``"wav"``, ``"ogg"``, ``"matroska,webm"``."""
        audio_streams = container.streams.audio
        if not audio_streams or audio_streams[0].codec_context is None:
            logger.debug("%s container of %d bytes has no decodable audio stream", self.container, size)
            raise SamoError(ErrorType.UNSUPPORTED_MEDIA, UNSUPPORTED_MESSAGE)
        self._stream = audio_streams[0]
        context = self._stream.codec_context
        self.codec: str = context.name
        """Decoder of the audio stream, e.g. ``"pcm_s16le"``, ``"opus"``, ``"aac"``."""
        self.declared_s: float | None = _declared_duration(container, self._stream)
        """The duration the container declares (or FFmpeg estimates), seconds; None if unknown."""
        self.decoded_samples = 0
        """Samples yielded so far, at ``SAMPLE_RATE``."""
        logger.debug(
            "opened %d bytes: container %s, codec %s, %s Hz, %s channels, declared %s s",
            size, self.container, self.codec, context.sample_rate, context.channels,
            "unknown" if self.declared_s is None else f"{self.declared_s:.3f}",
        )  # fmt: skip
        if self.declared_s is not None:
            if self.declared_s > limits.max_duration_s:
                raise _too_long(self.declared_s, limits)
            work = self.declared_s * max(context.sample_rate or 0, 1) * max(context.channels or 0, 1)
            if work > limits.max_decode_samples:
                raise _too_much_work(work, limits)

    @property
    def decoded_s(self) -> float:
        return self.decoded_samples / SAMPLE_RATE

    def close(self) -> None:
        """Stop decoding and release FFmpeg's buffers; safe from any thread, and more than once."""
        self._cancelled.set()
        with self._lock:
            self._container.close()

    def blocks(self, block_samples: int = BLOCK_SAMPLES) -> Iterator[np.ndarray]:
        """The audio as float32 blocks of ``block_samples`` (the last one shorter), values in [-1, 1].

        Raises :class:`SamoError` as the module docstring says, once the limit is passed or, for a
        file that yields nothing usable, at its end; :class:`DecodeCancelled` once ``cancelled`` is set.
        """
        output = _Mono16k()
        pending: list[np.ndarray] = []
        pending_size = 0
        input_s = 0.0  # decoded duration at the input's own rate
        work = 0  # input samples over all channels
        bytes_read = 0
        bad_packets = 0
        errors = False
        packets = _packets(self._container, self._stream)
        while True:
            with self._lock:
                if self._cancelled.is_set():
                    raise DecodeCancelled
                packet = next(packets, _END)
                if packet is _END:
                    break
                if packet is None:  # the demuxer failed: keep what came before
                    errors = True
                    break
                bytes_read += packet.size
                try:
                    for frame in packet.decode():
                        if frame.samples <= 0 or frame.sample_rate <= 0:
                            continue
                        input_s += frame.samples / frame.sample_rate
                        work += frame.samples * max(frame.layout.nb_channels, 1)
                        # Checked before resampling, so the rest of the file is not read: its length
                        # is extrapolated from the share read.
                        if input_s > self._limits.max_duration_s:
                            raise _too_long(self._estimate(input_s, bytes_read), self._limits)
                        if work > self._limits.max_decode_samples:
                            raise _too_much_work(self._estimate(work, bytes_read), self._limits)
                        for piece in output.add(frame):
                            pending.append(piece)
                            pending_size += piece.size
                except _PYAV_ERRORS as error:
                    errors = True
                    bad_packets += 1
                    logger.debug(
                        "skipped a %d-byte packet that failed to decode (%s)",
                        packet.size,
                        type(error).__name__,
                    )
                    if bad_packets > MAX_BAD_PACKETS:
                        break
            while pending_size >= block_samples:
                block, pending, pending_size = _take(pending, block_samples)
                yield self._emit(block)

        with self._lock:
            try:
                pending += output.finish()
            except _PYAV_ERRORS as error:
                logger.debug("resampler failed to flush (%s)", type(error).__name__)
                errors = True
        tail = np.concatenate(pending) if pending else np.zeros(0, dtype=np.float32)
        total = self.decoded_samples + tail.size
        duration = total / SAMPLE_RATE
        logger.debug(
            "decoded %.3f s from %s/%s, %d bad packets%s",
            duration, self.container, self.codec, bad_packets, ", with errors" if errors else "",
        )  # fmt: skip
        if total == 0 or (errors and duration < MIN_DAMAGED_DECODE_S):
            raise SamoError(ErrorType.INVALID_INPUT, CORRUPT_MESSAGE)
        if duration > self._limits.max_duration_s:
            raise _too_long(duration, self._limits)
        for start in range(0, tail.size, block_samples):
            yield self._emit(tail[start : start + block_samples])

    def _estimate(self, so_far: float, bytes_read: int) -> float:
        return max(so_far, so_far * self._size / bytes_read) if bytes_read else so_far

    def _emit(self, block: np.ndarray) -> np.ndarray:
        # Lossy decoders (AAC, Opus, MP3) overshoot full scale slightly, and damaged packets can
        # decode to non-finite values: keep the documented range.
        np.nan_to_num(block, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(block, -1.0, 1.0, out=block)
        self.decoded_samples += block.size
        return block


class _End(enum.Enum):
    """The end of a stream's packets (`None` is a demuxing error's)."""

    END = enum.auto()


_END = _End.END


def _take(pieces: list[np.ndarray], count: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """The first ``count`` samples of ``pieces`` as one new array, and the pieces left with their size."""
    joined = np.concatenate(pieces)
    rest = joined[count:].copy()
    return joined[:count], ([rest] if rest.size else []), rest.size


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


def _too_much_work(samples: float, limits: AudioLimits) -> SamoError:
    return SamoError(
        ErrorType.TOO_LARGE,
        f"audio needs {samples:,.0f} input samples decoded (sample rate x channels x seconds); "
        f"the limit is {limits.max_decode_samples:,}",
    )


class _Mono16k:
    """Resamples decoded frames to mono float32 at 16 kHz, handing each piece out as it is made.

    - ``rematrix_maxval=1`` makes the downmix average the channels: by default libswresample adds them
      at -3 dB each for float output, which takes in-phase stereo to 1.41 times full scale.
    - Before flushing, the resampler is fed silence and its output is cut to the input's length:
      flushing alone loses the last few milliseconds, and all of a clip shorter than the filter's
      delay (a 1 ms clip at 44.1 kHz comes out empty).
    - A stream whose sample rate, format or layout changes part-way (possible in MP3 and AAC) gets a
      new resampler from there.
    """

    def __init__(self) -> None:
        self._resampler: av.AudioResampler | None = None
        self._template: av.AudioFrame | None = None  # last input frame of the current resampler
        self._segment_input = 0  # samples fed to the current resampler
        self._segment_output = 0  # samples it made

    def add(self, frame: av.AudioFrame) -> list[np.ndarray]:
        """Resamples ``frame``, which holds samples and has a sample rate."""
        pieces = []
        if (
            self._resampler is not None
            and self._template is not None
            and not _same_format(frame, self._template)
        ):
            pieces = self._end_segment()
        if self._resampler is None:
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=SAMPLE_RATE, options={"rematrix_maxval": "1.0"}
            )
        made = self._arrays(self._resampler.resample(frame))
        self._segment_output += sum(piece.size for piece in made)
        self._template = frame
        self._segment_input += frame.samples
        return pieces + made

    def finish(self) -> list[np.ndarray]:
        return self._end_segment()

    @staticmethod
    def _arrays(frames: list[av.AudioFrame]) -> list[np.ndarray]:
        # Packed float mono: shape (1, samples). Copied, since PyAV may reuse a frame's buffer.
        return [np.array(frame.to_ndarray(), dtype=np.float32, copy=True).reshape(-1) for frame in frames]

    def _end_segment(self) -> list[np.ndarray]:
        resampler, template = self._resampler, self._template
        self._resampler = self._template = None
        if resampler is None or template is None:
            return []
        rate = template.sample_rate
        tail = self._arrays(resampler.resample(_silence_like(template, max(1024, rate // 10))))
        tail += self._arrays(resampler.resample(None))
        expected = -(-self._segment_input * SAMPLE_RATE // rate)  # ceil: a 1-sample clip keeps 1 sample
        wanted = max(expected - self._segment_output, 0)
        self._segment_input = self._segment_output = 0
        if not tail or wanted == 0:
            return []
        return [np.concatenate(tail)[:wanted]]


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
