"""POST /v1/transcribe and the OpenAI-compatible POST /v1/audio/transcriptions: form fields in, the
service's `Transcript` out, in the format asked for.

Both are `AdmittedUpload` routes: admission (gateway/admission.py) decides before the form is read,
so a request refused for load costs no upload. The form is then read within the upload body limit
and its part limits (gateway/http/body_limit.py), and the transcription is cancelled if the client
disconnects.
"""

from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute

from gateway.errors import ErrorType, SamoError, invalid_input
from gateway.http.answers import answer
from gateway.http.body_limit import UPLOAD_FORM_LIMITS
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, unless_disconnected
from gateway.http.errors import ERRORS
from gateway.results import (
    OpenAISegment,
    OpenAITranscription,
    OpenAIVerboseTranscription,
    OpenAIWord,
    Transcript,
)
from gateway.services import Services
from gateway.validation import validate_body
from samo.contracts.whisper import DecodeOptions
from samo.settings import GatewaySettings

OPENAI_MODEL_ALIASES = {"whisper-1"}
AUDIO_ERRORS = {
    **ERRORS,
    413: {"model": ERRORS[422]["model"], "description": "File larger or audio longer than the limits"},
    415: {"model": ERRORS[422]["model"], "description": "Not audio in a supported format"},
}
ResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
Granularity = Literal["segment", "word"]
OPENAI_FORMATS = {
    "description": "`json` or `verbose_json` (JSON, below), `text` and `srt` (text/plain), `vtt` (text/vtt)",
    "content": {"text/plain": {"schema": {"type": "string"}}, "text/vtt": {"schema": {"type": "string"}}},
}


def _timestamp(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{milliseconds:03d}"


def subtitles(transcript: Transcript, kind: Literal["srt", "vtt"]) -> str:
    separator = "," if kind == "srt" else "."
    blocks = [
        f"{index}\n{_timestamp(s.start, separator)} --> {_timestamp(s.end, separator)}\n{s.text}\n"
        if kind == "srt"
        else f"{_timestamp(s.start, separator)} --> {_timestamp(s.end, separator)}\n{s.text}\n"
        for index, s in enumerate(transcript.segments, start=1)
    ]
    header = "WEBVTT\n\n" if kind == "vtt" else ""
    return header + "\n".join(blocks)


def verbose(
    transcript: Transcript, language: str, granularities: tuple[Granularity, ...] = ("segment",)
) -> OpenAIVerboseTranscription:
    """OpenAI's `verbose_json`: the language by name, segments and/or words, as asked for."""
    words = [
        OpenAIWord(word=w.word.strip(), start=w.start, end=w.end)
        for s in transcript.segments
        for w in s.words
    ]
    segments = [
        OpenAISegment(
            id=index,
            start=s.start,
            end=s.end,
            text=s.text,
            temperature=transcript.options.temperature,
            avg_logprob=s.avg_logprob,
            no_speech_prob=s.no_speech_prob,
        )
        for index, s in enumerate(transcript.segments)
    ]
    return OpenAIVerboseTranscription(
        task=transcript.options.task,
        language=language,
        duration=transcript.duration,
        text=transcript.text,
        words=words if "word" in granularities else None,
        segments=segments if "segment" in granularities else None,
    )


class AdmittedUpload(APIRoute):
    """A route admitted at one Whisper window's cost before FastAPI reads its form (FastAPI reads the
    body before the endpoint runs); the transcription tops the cost up to the audio's duration."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        read_form_and_run = super().get_route_handler()

        async def admitted_first(request: Request) -> Response:
            services: Services = request.app.state.services
            with services.admitted(services.admission.costs.audio(0)):
                return await read_form_and_run(request)

        return admitted_first


async def read_upload(file: UploadFile, settings: GatewaySettings) -> bytes:
    """The uploaded file's bytes (the form was read within the upload body limit), refused with 413
    when the file alone is over `max_audio_bytes`, before anything is decoded."""
    if file.size is not None and file.size > settings.max_audio_bytes:
        limit_mb = settings.max_audio_bytes / (1 << 20)
        raise SamoError(
            ErrorType.TOO_LARGE,
            f"audio file is {file.size / (1 << 20):.1f} MB; the limit is {limit_mb:.1f} MB",
        )
    return await file.read()


def transcription_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["transcription"], route_class=AdmittedUpload)
    limit_mb = settings.max_audio_bytes / (1 << 20)
    upload = {"form_limits": UPLOAD_FORM_LIMITS}  # the body's limit: gateway/http/body_limit.py

    async def run(
        request: Request, file: UploadFile, options: DecodeOptions, model: str | None
    ) -> Transcript | None:
        """The transcript, or None when the client left (its transcription is then cancelled)."""
        services: Services = request.app.state.services
        data = await read_upload(file, settings)
        return await unless_disconnected(request, services.transcription.transcribe(data, options, model))

    @router.post("/v1/transcribe", response_model=Transcript, responses=AUDIO_ERRORS, **upload)
    async def transcribe(
        request: Request,
        file: Annotated[
            UploadFile,
            File(description=f"Audio: wav, flac, mp3, ogg/opus, webm, m4a; up to {limit_mb:.0f} MB"),
        ],
        language: Annotated[
            str | None, Form(min_length=2, max_length=3, description="ISO 639-1; default: detect")
        ] = None,
        task: Annotated[Literal["transcribe", "translate"], Form()] = "transcribe",
        beam_size: Annotated[int, Form(ge=1, le=10)] = 5,
        word_timestamps: Annotated[
            bool,
            Form(
                description="Words with start, end and probability in each segment "
                "(CTranslate2 models; others answer 422)"
            ),
        ] = False,
        model: Annotated[str | None, Form(max_length=128)] = None,
    ) -> Response:
        """Text, segments with start/end in seconds, duration and language for one audio file."""
        options = validate_body(
            DecodeOptions,
            {"language": language, "task": task, "beam_size": beam_size, "word_timestamps": word_timestamps},
        )
        transcript = await run(request, file, options, model)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return answer(transcript)

    @router.post(
        "/v1/audio/transcriptions",
        response_model=OpenAITranscription | OpenAIVerboseTranscription,
        responses={200: OPENAI_FORMATS, **AUDIO_ERRORS},
        **upload,
    )
    async def openai_transcriptions(
        request: Request,
        file: Annotated[UploadFile, File()],
        model: Annotated[
            str, Form(max_length=128, description="`whisper-1` or an installed model name")
        ] = "whisper-1",
        language: Annotated[str | None, Form(min_length=2, max_length=3)] = None,
        prompt: Annotated[str | None, Form(max_length=1000)] = None,
        response_format: Annotated[ResponseFormat, Form()] = "json",
        temperature: Annotated[float, Form(ge=0.0, le=1.0)] = 0.0,
        timestamp_granularities: Annotated[
            list[Granularity] | None,
            Form(
                alias="timestamp_granularities[]",
                description="`segment` (default) and/or `word`; with `response_format=verbose_json` only",
            ),
        ] = None,
    ) -> Response:
        """OpenAI's audio transcription API, so existing OpenAI clients work unchanged."""
        granularities = tuple(dict.fromkeys(timestamp_granularities or ("segment",)))
        if timestamp_granularities and response_format != "verbose_json":
            raise invalid_input("timestamp_granularities[]: needs `response_format=verbose_json`")
        options = validate_body(
            DecodeOptions,
            {
                "language": language,
                "initial_prompt": prompt,
                "temperature": temperature,
                "word_timestamps": "word" in granularities,
            },
        )
        name = None if model in OPENAI_MODEL_ALIASES else model
        transcript = await run(request, file, options, name)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if response_format == "text":
            return PlainTextResponse(transcript.text)
        if response_format in ("srt", "vtt"):
            media = "text/vtt" if response_format == "vtt" else "text/plain"
            return PlainTextResponse(subtitles(transcript, response_format), media_type=media)
        if response_format == "verbose_json":
            card = request.app.state.services.transcription.model(transcript.model.name).card
            return answer(verbose(transcript, card.language_name(transcript.language), granularities))
        return answer(OpenAITranscription(text=transcript.text))

    return router
