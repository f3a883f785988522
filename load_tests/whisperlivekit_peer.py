"""WhisperLiveKit (`whisperlivekit` on PyPI), the second peer of `samo bench live`: its own server process
from its own environment (`make peers-livekit-env`: installed without its declared dependencies, which pull
a torchaudio that does not load against torch 2.13), with its faster-whisper backend and LocalAgreement
policy on the same CTranslate2 tiny.en folder the stack exports, driven through its own WebSocket protocol
with the same recordings at the same pace. Nothing here imports `whisperlivekit`.

Its protocol (`whisperlivekit/basic_server.py`, `/asr`, `mode=full`): the server opens with
`{"type": "config", "useAudioWorklet": true, "mode": "full"}`; the client sends raw s16le 16 kHz PCM
(`--pcm-input`, no ffmpeg) and an empty binary message at the end; the server sends the whole transcript
on each change, `{"status": ..., "lines": [{"speaker", "text", "start", "end"}, ...],
"buffer_transcription": ..., ...}` (times as `H:MM:SS.cc`), and `{"type": "ready_to_stop"}` once it has
transcribed all the audio. `lines` hold only committed words (LocalAgreement: the words two successive
decodes of its audio buffer agree on, and the rest at the end of the stream), which never change;
`buffer_transcription` is the tail not yet committed. Lines split only at pauses over `--pause-segmentation-seconds` (5 s) or at
speaker changes, so a line grows while the user speaks: its unit of text that will not change is the
committed word. A commit here is the words one message adds to `lines`; its finalize latency runs from the
end of its last word's audio (the last speech line's `end`) to that message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from load_tests.processes import port_server_process
from load_tests.whisperlive_peer import QUIET_S, PeerPace
from samo.free_ports import free_port

logger = logging.getLogger(__name__)

WHISPERLIVEKIT_VENV = Path(".venv-peers/whisperlivekit")
SILENCE_SPEAKER = -2
"""`speaker` of the lines that mark a pause (their text is empty)."""
WARMUP_WAV = Path(__file__).resolve().parents[1] / "tests" / "data" / "jfk.wav"
"""Its server transcribes a file at start-up; by default it downloads JFK's clip from GitHub."""


def seconds(stamp: str) -> float:
    """`H:MM:SS.cc`, as its lines carry `start` and `end`, in seconds."""
    hours, minutes, rest = stamp.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


@dataclass(frozen=True)
class Commit:
    """Words one message added to the committed lines: their text, where the last of them ends in the
    audio (seconds) and when the message came (monotonic seconds)."""

    text: str
    end_s: float
    at: float


@dataclass
class LiveKitRun:
    """What one WhisperLiveKit session received."""

    speech_sent_at: float
    commits: list[Commit] = field(default_factory=list)
    committed: str = ""
    buffer: str = ""
    stopped: bool = False
    """`ready_to_stop` came: the server had transcribed all the audio."""
    errors: list[str] = field(default_factory=list)

    def observe(self, body: dict, at: float) -> None:
        """One message from the server, received at `at`."""
        kind = body.get("type")
        if kind == "ready_to_stop":
            self.stopped = True
            return
        if kind == "error" or body.get("status") == "error":
            self.errors.append(str(body.get("error", "")))
            return
        if "lines" not in body:  # `config` and any other notice
            return
        speech = [line for line in body["lines"] if line.get("speaker") != SILENCE_SPEAKER]
        committed = " ".join(str(line.get("text") or "").strip() for line in speech).strip()
        self.buffer = str(body.get("buffer_transcription") or "")
        if committed == self.committed:
            return
        if committed.startswith(self.committed):
            added = committed[len(self.committed) :]
        else:  # committed words never change in its protocol; should they, the whole text counts as new
            logger.warning("WhisperLiveKit's committed text changed before its end")
            added = committed
        self.committed = committed
        self.commits.append(Commit(added.strip(), seconds(speech[-1]["end"]), at))

    @property
    def transcript(self) -> str:
        """The committed lines, then what was still in the buffer when the session ended."""
        return " ".join(t for t in (self.committed, self.buffer.strip()) if t)

    @property
    def never_completed(self) -> int:
        """1 where text was still uncommitted when the session ended (its buffer is one stretch)."""
        return 1 if self.buffer.strip() else 0

    def finalize_latencies(self) -> list[float]:
        """From the end of each commit's last word in the audio (sent at real-time pace) to its message."""
        return [commit.at - (self.speech_sent_at + commit.end_s) for commit in self.commits]


def installed_version(venv: Path = WHISPERLIVEKIT_VENV) -> str:
    """The `whisperlivekit` version in `venv`, from its dist-info folder's name."""
    found = sorted(venv.glob("lib/python*/site-packages/whisperlivekit-*.dist-info"))
    if not found:
        raise FileNotFoundError(f"no whisperlivekit in {venv}: run `make peers-livekit-env`")
    return found[0].name.removeprefix("whisperlivekit-").removesuffix(".dist-info")


def server_command(venv: Path, model_dir: Path, port: int) -> list[str]:
    """Its server on `model_dir`: faster-whisper, LocalAgreement, English, raw PCM, its Silero VAC (the
    ONNX file it ships); CTranslate2 picks the compute type (`auto`: int8_float32 on this CPU), it has no
    flag."""
    return [
        str(venv / "bin" / "whisperlivekit-server"),
        *("--host", "127.0.0.1", "--port", str(port)),
        *("--backend", "faster-whisper", "--backend-policy", "localagreement"),
        *("--model_dir", str(model_dir), "--language", "en", "--pcm-input"),
        *("--warmup-file", str(WARMUP_WAV) if WARMUP_WAV.exists() else ""),
        *("--log-level", "WARNING"),
    ]


@contextlib.contextmanager
def whisperlivekit_server(model_dir: Path, venv: Path = WHISPERLIVEKIT_VENV) -> Iterator[str]:
    """A WhisperLiveKit server on `model_dir` (one model shared by its sessions, on CPU); yields its
    WebSocket URL. Its output goes to a file whose end is in the error if it does not start."""
    if not (venv / "bin" / "whisperlivekit-server").exists():
        raise FileNotFoundError(f"{venv} has no whisperlivekit-server: run `make peers-livekit-env`")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="samo-whisperlivekit-") as home:
        environment = {
            **os.environ,
            "HOME": home,
            "OMP_NUM_THREADS": "2",
            "HF_HUB_OFFLINE": "1",
            "NUMBA_CACHE_DIR": home,
        }
        with port_server_process(
            server_command(venv, model_dir, port),
            port,
            name="WhisperLiveKit",
            env=environment,
            log=Path(home) / "server.log",
            timeout_s=180,
        ):
            yield f"ws://127.0.0.1:{port}/asr"


def pcm16(samples: np.ndarray) -> bytes:
    """16 kHz float32 samples as s16le bytes, what `--pcm-input` expects."""
    return (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()


async def stream_to_whisperlivekit(url: str, samples: np.ndarray, pace: PeerPace) -> LiveKitRun:
    """Speech (16 kHz float32) at real-time pace in `chunk_s` frames, then silence and the empty message
    that ends the stream; returns once the server said `ready_to_stop`, closed, or went quiet."""
    audio = pcm16(pace.padded(samples))
    async with connect(url, max_size=None, open_timeout=60) as websocket:
        while json.loads(await asyncio.wait_for(websocket.recv(), 120)).get("type") != "config":
            pass
        run = LiveKitRun(speech_sent_at=time.monotonic())
        sent = asyncio.Event()
        receiver = asyncio.create_task(_receive(websocket, run, sent))
        with contextlib.suppress(ConnectionClosed):
            await pace.send(websocket, audio, 2, run.speech_sent_at)
            await websocket.send(b"")
        sent.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver, pace.timeout_s)
        receiver.cancel()
    return run


async def _receive(websocket: ClientConnection, run: LiveKitRun, sent: asyncio.Event) -> None:
    """Messages until `ready_to_stop`, the server closes, or it has been quiet for `QUIET_S` after the
    audio ended."""
    while not run.stopped:
        try:
            message = await asyncio.wait_for(websocket.recv(), QUIET_S)
        except TimeoutError:
            if sent.is_set():
                return
            continue
        except ConnectionClosed:
            return
        run.observe(json.loads(message), time.monotonic())
