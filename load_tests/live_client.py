"""A live transcription client (the tests, `samo bench live`): streams 16 kHz speech to
`WS /v1/realtime` as 16-bit PCM at 24 kHz (OpenAI's rate) or 16 kHz, in chunks at a chosen pace, and
keeps every server event with the time it arrived."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from samo.contracts.whisper import SAMPLE_RATE

DELTA = "conversation.item.input_audio_transcription.delta"
COMPLETED = "conversation.item.input_audio_transcription.completed"
PARTIAL = "samo.input_audio_transcription.partial"


def realtime_url(http_url: str) -> str:
    return http_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def pcm_at(samples: np.ndarray, rate: int) -> bytes:
    """16 kHz float32 samples as 16-bit PCM at `rate` (linear interpolation: plenty for speech)."""
    if rate != SAMPLE_RATE:
        positions = np.arange(0, samples.size * rate / SAMPLE_RATE) * SAMPLE_RATE / rate
        samples = np.interp(positions, np.arange(samples.size), samples).astype(np.float32)
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def append(chunk: bytes) -> str:
    return json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(chunk).decode()})


def session_update(rate: int = 24000, turn_detection: dict | str | None = "server_vad", **input_: Any) -> str:
    audio_input: dict[str, Any] = {"format": {"type": "audio/pcm", "rate": rate}, **input_}
    if turn_detection == "server_vad":
        audio_input["turn_detection"] = {"type": "server_vad", "silence_duration_ms": 500}
    else:
        audio_input["turn_detection"] = turn_detection
    return json.dumps(
        {"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_input}}}
    )


@dataclass
class Item:
    """One turn as the client saw it."""

    item_id: str
    deltas: list[str] = field(default_factory=list)
    delta_at: list[float] = field(default_factory=list)
    """When each delta arrived (the run's clock)."""
    completed: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    first_delta_at: float | None = None
    stopped_at: float | None = None
    completed_at: float | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)

    @property
    def confirmed_early(self) -> str:
        """The text its partial decodes confirmed (deltas before its speech stopped); the rest of `text`
        is its final decode's."""
        stopped = self.stopped_at if self.stopped_at is not None else float("inf")
        return "".join(d for d, at in zip(self.deltas, self.delta_at, strict=True) if at < stopped)


@dataclass
class LiveRun:
    events: list[tuple[float, dict]]
    close_code: int | None
    speech_sent_at: float = 0.0
    """When the first chunk was sent (seconds, the run's clock)."""

    def of_type(self, kind: str) -> list[dict]:
        return [event for _, event in self.events if event["type"] == kind]

    def items(self) -> list[Item]:
        """Every committed turn in order, with its deltas, completed text and times."""
        items: dict[str, Item] = {}
        for at, event in self.events:
            item_id = event.get("item_id")
            if item_id is None:
                continue
            item = items.setdefault(item_id, Item(item_id))
            match event["type"]:
                case "input_audio_buffer.speech_started":
                    item.start_ms = event["audio_start_ms"]
                case "input_audio_buffer.speech_stopped":
                    item.end_ms, item.stopped_at = event["audio_end_ms"], at
                case "conversation.item.input_audio_transcription.delta":
                    item.deltas.append(event["delta"])
                    item.delta_at.append(at)
                    item.first_delta_at = item.first_delta_at or at
                case "conversation.item.input_audio_transcription.completed":
                    item.completed, item.completed_at = event["transcript"], at
        return [item for item in items.values() if item.completed is not None]

    @property
    def transcript(self) -> str:
        return " ".join(item.completed or "" for item in self.items() if item.completed)


async def receive_all(
    websocket: ClientConnection, events: list[tuple[float, dict]], clock: float
) -> int | None:
    try:
        async for message in websocket:
            events.append((time.monotonic() - clock, json.loads(message)))
    except ConnectionClosed:
        pass
    return websocket.close_code


async def stream_speech(
    url: str,
    samples: np.ndarray,
    *,
    rate: int = 24000,
    chunk_s: float = 0.04,
    speed: float = 1.0,
    turn_detection: dict | str | None = "server_vad",
    trailing_silence_s: float = 2.0,
    before: Sequence[str] = (),
    commit: bool = False,
    headers: dict[str, str] | None = None,
    subprotocols: Sequence[str] | None = None,
    timeout_s: float = 120.0,
) -> LiveRun:
    """Speech (16 kHz float32) sent at `speed` times real time (0: as fast as it goes), then trailing
    silence, a commit when asked, and `session.close`; every event until the server closes."""
    audio = np.concatenate(
        [samples.astype(np.float32), np.zeros(int(trailing_silence_s * SAMPLE_RATE), np.float32)]
    )
    pcm = pcm_at(audio, rate)
    step = int(chunk_s * rate) * 2
    events: list[tuple[float, dict]] = []
    offered = [Subprotocol(name) for name in subprotocols] if subprotocols is not None else None
    async with connect(
        url, additional_headers=headers, subprotocols=offered, max_size=None, open_timeout=30
    ) as websocket:
        clock = time.monotonic()
        receiver = asyncio.create_task(receive_all(websocket, events, clock))
        started = time.monotonic()
        with contextlib.suppress(ConnectionClosed):  # the server may close first (a flood, a limit)
            await websocket.send(session_update(rate, turn_detection))
            for message in before:
                await websocket.send(message)
            started = time.monotonic()
            for index, offset in enumerate(range(0, len(pcm), step)):
                if speed:
                    await asyncio.sleep(max(0.0, started + index * chunk_s / speed - time.monotonic()))
                await websocket.send(append(pcm[offset : offset + step]))
            if commit:
                await websocket.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await websocket.send(json.dumps({"type": "session.close"}))
        close_code = await asyncio.wait_for(receiver, timeout_s)
    return LiveRun(events, close_code, started - clock)
