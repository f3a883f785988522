"""WhisperLive (`whisper-live` on PyPI, faster-whisper backend), the peer of `samo bench live`: its own
server process from its own environment (`make peers-live-env`: it pins torch, faster-whisper 1.2.0 and
tokenizers against ours), on the same CTranslate2 tiny.en folder the stack exports, driven through its own
WebSocket protocol with the same recordings at the same pace.

Its protocol: the client sends a JSON options message, waits for `SERVER_READY`, then sends raw float32
16 kHz audio frames and `END_OF_AUDIO`; the server sends `{"segments": [...]}` with the last segments,
each `completed` once its text repeated `same_output_threshold` times or a pause ended it.

Its VAD model: WhisperLive fetches Silero's ONNX file with wget at start-up into
`~/.cache/whisper-live/`; nothing can be fetched here, so the server runs with a HOME of its own where
that file is the `silero-vad` package's own `silero_vad.onnx` (the same model family and input names).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from load_tests.processes import port_server_process
from samo.free_ports import free_port

WHISPERLIVE_VENV = Path(".venv-peers/whisperlive")
SAMPLE_RATE = 16000
QUIET_S = 30.0
"""After END_OF_AUDIO, the run ends once the server has sent nothing for this long (a server that fell
behind real time is still decoding the audio it was sent)."""


@dataclass
class PeerRun:
    """What one WhisperLive session received: each completed segment (start, end, text, when it came)."""

    speech_sent_at: float
    completed: dict[tuple[str, str], tuple[float, float, str, float]] = field(default_factory=dict)
    last: list[dict] = field(default_factory=list)

    @property
    def transcript(self) -> str:
        """The completed segments in order, then what was still open when the session ended."""
        done = sorted(self.completed.values())
        texts = [text for _, _, text, _ in done]
        ends = max((end for _, end, _, _ in done), default=-1.0)
        texts += [s["text"] for s in self.last if not s.get("completed") and float(s["start"]) >= ends]
        return " ".join(t.strip() for t in texts if t.strip())

    @property
    def never_completed(self) -> int:
        """Segments still open when the session ended (WhisperLive completes a segment only once its text
        repeats or a pause follows it)."""
        ends = max((end for _, end, _, _ in self.completed.values()), default=-1.0)
        return sum(1 for s in self.last if not s.get("completed") and float(s["start"]) >= ends)

    def finalize_latencies(self) -> list[float]:
        """From the end of each completed segment's audio (sent at real-time pace) to its `completed`."""
        return [at - (self.speech_sent_at + end) for _, end, _, at in self.completed.values()]


def vad_model(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python*/site-packages/silero_vad/data/silero_vad.onnx"))
    if not found:
        raise FileNotFoundError(f"no silero_vad.onnx in {venv}: run `make peers-live-env`")
    return found[0]


@contextlib.contextmanager
def whisperlive_server(model_dir: Path, max_clients: int, venv: Path = WHISPERLIVE_VENV) -> Iterator[str]:
    """A WhisperLive server on `model_dir` (one model shared by its clients, int8 on CPU); yields its URL."""
    python = venv / "bin" / "python"
    if not python.exists():
        raise FileNotFoundError(f"{python} is missing: run `make peers-live-env`")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="samo-whisperlive-") as home:
        cache = Path(home) / ".cache" / "whisper-live"
        cache.mkdir(parents=True)
        shutil.copy(vad_model(venv), cache / "silero_vad.onnx")
        code = (
            "from whisper_live.server import TranscriptionServer; "
            f"TranscriptionServer().run('127.0.0.1', {port}, backend='faster_whisper', "
            f"faster_whisper_custom_model_path={str(model_dir)!r}, single_model=True, "
            f"max_clients={max_clients}, max_connection_time=3600)"
        )
        environment = {**os.environ, "HOME": home, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
        with port_server_process(
            [str(python), "-c", code],
            port,
            name="WhisperLive",
            env=environment,
            log=Path(home) / "server.log",
        ):
            yield f"ws://127.0.0.1:{port}"


@dataclass(frozen=True)
class PeerPace:
    chunk_s: float = 0.04
    trailing_silence_s: float = 2.0
    timeout_s: float = 600.0

    def padded(self, samples: np.ndarray) -> np.ndarray:
        """Speech (16 kHz) as float32, then `trailing_silence_s` of silence."""
        silence = np.zeros(int(self.trailing_silence_s * SAMPLE_RATE), np.float32)
        return np.concatenate([samples.astype(np.float32), silence])

    async def send(
        self, websocket: ClientConnection, audio: bytes, bytes_per_sample: int, started: float
    ) -> None:
        """`audio` in `chunk_s` frames, each sent when the wall clock since `started` reaches it."""
        step = bytes_per_sample * int(self.chunk_s * SAMPLE_RATE)
        for index, offset in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(0.0, started + index * self.chunk_s - time.monotonic()))
            await websocket.send(audio[offset : offset + step])


async def stream_to_whisperlive(url: str, samples: np.ndarray, model: str, pace: PeerPace) -> PeerRun:
    """Speech (16 kHz float32) at real-time pace in `chunk_s` frames, then silence and END_OF_AUDIO."""
    audio = pace.padded(samples).tobytes()
    uid = str(uuid.uuid4())
    options = {"uid": uid, "language": "en", "task": "transcribe", "model": model, "use_vad": True}
    async with connect(url, max_size=None, open_timeout=60) as websocket:
        await websocket.send(json.dumps(options))
        while json.loads(await asyncio.wait_for(websocket.recv(), 120)).get("message") != "SERVER_READY":
            pass
        run = PeerRun(speech_sent_at=time.monotonic())
        sent = asyncio.Event()
        receiver = asyncio.create_task(_receive(websocket, run, sent))
        with contextlib.suppress(ConnectionClosed):
            await pace.send(websocket, audio, 4, run.speech_sent_at)
            await websocket.send(b"END_OF_AUDIO")
        sent.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver, pace.timeout_s)
        receiver.cancel()
    return run


async def _receive(websocket: ClientConnection, run: PeerRun, sent: asyncio.Event) -> None:
    """Segments until the server closes, or has been quiet for `QUIET_S` after the audio ended."""
    while True:
        try:
            message = await asyncio.wait_for(websocket.recv(), QUIET_S)
        except TimeoutError:
            if sent.is_set():
                return
            continue
        except ConnectionClosed:
            return
        at = time.monotonic()
        body = json.loads(message)
        segments = body.get("segments")
        if not segments:
            continue
        run.last = segments
        for segment in segments:
            if segment.get("completed"):
                key = (segment["start"], segment["text"])
                if key not in run.completed:
                    run.completed[key] = (float(segment["start"]), float(segment["end"]), segment["text"], at)
