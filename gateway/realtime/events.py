"""The events of OpenAI's Realtime transcription protocol, as SAMO speaks it: what clients send, what the
session answers, and the session's settings those events carry.

Client events: `session.update` (GA: `session.type` `transcription`, `session.audio.input.*`) and the
beta's `transcription_session.update` (`input_audio_format`, `input_audio_transcription`,
`turn_detection`), `input_audio_buffer.append` / `.commit` / `.clear`. Server events carry OpenAI's
names and fields, so OpenAI's SDKs parse them; SAMO adds one event, `samo.input_audio_transcription.partial`,
with the confirmed text and the revisable tail of the turn being spoken. Unknown fields are refused, as
OpenAI refuses them; error events have OpenAI's shape (`error.type`, `code`, `message`, `param`,
`event_id` of the client event at fault).
"""

from __future__ import annotations

import itertools
import json
import secrets
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from gateway.results import JournalAnalysis
from gateway.validation import describe_errors
from samo.contracts.whisper import SAMPLE_RATE

OPENAI_RATE = 24_000
RATES = (OPENAI_RATE, SAMPLE_RATE)
"""Input sample rates accepted: OpenAI's 24 kHz and Whisper's own 16 kHz (16-bit mono PCM both)."""

_counter = itertools.count(1)


def new_id(prefix: str) -> str:
    """`event_…` / `item_…`: unique in the process, unguessable across sessions."""
    return f"{prefix}_{secrets.token_hex(6)}{next(_counter):x}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the session's settings --


class ServerVad(_Strict):
    """OpenAI's `server_vad`, on Silero: speech starts when a 32 ms frame's probability reaches
    `threshold`, and stops after `silence_duration_ms` under it (Silero's hysteresis: under
    `threshold - 0.15`)."""

    type: Literal["server_vad"] = "server_vad"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    prefix_padding_ms: int = Field(default=300, ge=0, le=2000)
    silence_duration_ms: int = Field(default=500, ge=100, le=10_000)
    # Accepted for OpenAI clients; a transcription session creates no responses.
    create_response: bool | None = None
    interrupt_response: bool | None = None
    idle_timeout_ms: int | None = None


class Transcription(_Strict):
    model: str | None = Field(default=None, max_length=128)
    """`whisper-1`, OpenAI's names (`gpt-4o-transcribe`…) or an installed model; OpenAI's names mean the
    default model."""
    language: str | None = Field(default=None, max_length=3)
    prompt: str | None = Field(default=None, max_length=1000)


class PcmFormat(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[24000, 16000] = OPENAI_RATE


class NoiseReduction(_Strict):
    """Accepted and ignored: Whisper takes the audio as it is."""

    type: str | None = None
    strength: float | None = None


class SamoOptions(_Strict):
    journal: bool = False
    """At the end of the session (the client sends `session.close`), the whole transcript goes through
    the journal pipeline and its analysis arrives as `samo.journal.completed`."""


class LiveConfig(_Strict):
    """A live session's settings, whichever form of update set them."""

    rate: Literal[24000, 16000] = OPENAI_RATE
    transcription: Transcription = Transcription()
    turn_detection: ServerVad | None = ServerVad()
    journal: bool = False

    def described(self) -> dict[str, Any]:
        """The GA `session` object of session.created / session.updated."""
        return {
            "type": "transcription",
            "id": None,
            "object": "realtime.transcription_session",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": self.rate},
                    "transcription": self.transcription.model_dump(),
                    "turn_detection": self.turn_detection.model_dump(exclude_none=True)
                    if self.turn_detection
                    else None,
                    "noise_reduction": None,
                }
            },
            "include": [],
            "samo": {"journal": self.journal},
        }


class _AudioInput(_Strict):
    format: PcmFormat | None = None
    transcription: Transcription | None = None
    turn_detection: ServerVad | None = None
    noise_reduction: NoiseReduction | None = None


class _Audio(_Strict):
    input: _AudioInput | None = None


class TranscriptionSession(_Strict):
    """GA `session.update`'s session of type `transcription`."""

    type: Literal["transcription"] = "transcription"
    audio: _Audio | None = None
    include: list[str] | None = None
    samo: SamoOptions | None = None

    def applied_to(self, config: LiveConfig) -> LiveConfig:
        changes: dict[str, Any] = {}
        if self.samo is not None:
            changes["journal"] = self.samo.journal
        given = self.audio.input if self.audio is not None else None
        if given is not None:
            if given.format is not None:
                changes["rate"] = given.format.rate
            if given.transcription is not None:
                changes["transcription"] = given.transcription
            if "turn_detection" in given.model_fields_set:
                changes["turn_detection"] = given.turn_detection
        return config.model_copy(update=changes)


class BetaTranscriptionSession(_Strict):
    """The beta's `transcription_session.update` session; `input_audio_rate` is SAMO's (16 kHz input)."""

    input_audio_format: Literal["pcm16"] | None = None
    input_audio_rate: Literal[24000, 16000] | None = None
    input_audio_transcription: Transcription | None = None
    turn_detection: ServerVad | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    include: list[str] | None = None
    samo: SamoOptions | None = None

    def applied_to(self, config: LiveConfig) -> LiveConfig:
        changes: dict[str, Any] = {}
        if self.input_audio_rate is not None:
            changes["rate"] = self.input_audio_rate
        if self.input_audio_transcription is not None:
            changes["transcription"] = self.input_audio_transcription
        if "turn_detection" in self.model_fields_set:
            changes["turn_detection"] = self.turn_detection
        if self.samo is not None:
            changes["journal"] = self.samo.journal
        return config.model_copy(update=changes)


# -- client events --


class SessionUpdate(_Strict):
    type: Literal["session.update"]
    event_id: str | None = Field(default=None, max_length=128)
    session: TranscriptionSession


class BetaSessionUpdate(_Strict):
    type: Literal["transcription_session.update"]
    event_id: str | None = Field(default=None, max_length=128)
    session: BetaTranscriptionSession


class Append(_Strict):
    type: Literal["input_audio_buffer.append"]
    event_id: str | None = Field(default=None, max_length=128)
    audio: str


class Commit(_Strict):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = Field(default=None, max_length=128)


class Clear(_Strict):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = Field(default=None, max_length=128)


class Close(_Strict):
    """Ends the session: the open turn is committed, its transcript completed (and, with the `journal`
    option, analysed); then the server closes the connection."""

    type: Literal["session.close"]
    event_id: str | None = Field(default=None, max_length=128)


ClientEvent = SessionUpdate | BetaSessionUpdate | Append | Commit | Clear | Close
CLIENT_EVENTS: dict[str, type[ClientEvent]] = {
    "session.update": SessionUpdate,
    "transcription_session.update": BetaSessionUpdate,
    "input_audio_buffer.append": Append,
    "input_audio_buffer.commit": Commit,
    "input_audio_buffer.clear": Clear,
    "session.close": Close,
}


class BadEvent(Exception):
    """A client event that cannot be taken: what its `error` event says."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "invalid_value",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.code, self.param, self.event_id = message, code, param, event_id

    def error_event(self) -> ErrorEvent:
        """OpenAI's `error` event for it."""
        detail = ErrorDetail(code=self.code, message=self.message, param=self.param, event_id=self.event_id)
        return ErrorEvent(error=detail)


_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


def parse_client_event(text: str) -> ClientEvent:
    """A client event from its JSON text, or `BadEvent` naming what is wrong (never quoting audio)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise BadEvent("The event is not valid JSON.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise BadEvent("An event is a JSON object with a `type`.", code="invalid_json")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data.get("type")
    model = CLIENT_EVENTS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadEvent(
            f"Invalid value for 'type'. Supported values are: {', '.join(CLIENT_EVENTS)}.",
            param="type",
            event_id=event_id,
        )
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise BadEvent(
            describe_errors(error.errors()),
            code=_CODES.get(first["type"], "invalid_value"),
            param=param,
            event_id=event_id,
        ) from None


# -- server events --


class ServerEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(default_factory=lambda: new_id("event"))


class _SessionEvent(ServerEvent):
    config: LiveConfig = Field(exclude=True)
    """The settings as the session holds them (for transports that carry them otherwise)."""

    @computed_field
    @property
    def session(self) -> dict[str, Any]:
        return self.config.described()


class SessionCreated(_SessionEvent):
    type: Literal["session.created", "session.updated"] = "session.created"


class BetaSessionUpdated(_SessionEvent):
    type: Literal["transcription_session.created", "transcription_session.updated"] = (
        "transcription_session.updated"
    )


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    audio_start_ms: int
    item_id: str


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    audio_end_ms: int
    item_id: str


class Committed(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None = None


class Cleared(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class Delta(ServerEvent):
    """Confirmed text only: a client that concatenates a turn's deltas has its `completed` transcript."""

    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class Partial(ServerEvent):
    """SAMO's: the turn so far for display, `confirmed` (every delta so far) then `tail` (words the next
    decode may still change)."""

    type: Literal["samo.input_audio_transcription.partial"] = "samo.input_audio_transcription.partial"
    item_id: str
    content_index: int = 0
    confirmed: str
    tail: str


class DurationUsage(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["duration"] = "duration"
    seconds: float


class Completed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: DurationUsage


class ErrorDetail(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["invalid_request_error", "server_error"] = "invalid_request_error"
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None
    """The client event at fault, when there is one."""


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class TranscriptionFailed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.failed"] = (
        "conversation.item.input_audio_transcription.failed"
    )
    item_id: str
    content_index: int = 0
    error: ErrorDetail


class JournalCompleted(ServerEvent):
    """SAMO's: the session's whole transcript through the journal pipeline (`journal` option)."""

    type: Literal["samo.journal.completed"] = "samo.journal.completed"
    analysis: JournalAnalysis


class SessionClosed(ServerEvent):
    type: Literal["session.closed"] = "session.closed"
