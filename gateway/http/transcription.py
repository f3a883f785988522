"""POST /v1/transcribe and the OpenAI-compatible POST /v1/audio/transcriptions: form fields to the
operations, their answers back in the format asked for.

Both are `AdmittedUpload` routes: the operation layer admits the upload before FastAPI reads the form,
so a request refused for load or shutdown costs no upload. The form is then read within the upload
body limit and its part limits (gateway/http/body_limit.py), and the transcription is cancelled if the
client disconnects.
"""

from collections.abc import Awaitable, Callable, Coroutine
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.datastructures import UploadFile as FormFile

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.http.answers import answer
from gateway.http.body_limit import UPLOAD_FORM_LIMITS
from gateway.http.context import request_context
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, unless_disconnected
from gateway.http.errors import ERRORS
from gateway.operations import Operations, Upload, uploaded
from gateway.operations.openai_transcription import Granularity, ResponseFormat
from gateway.results import OpenAITranscription, OpenAIVerboseTranscription, Transcript
from samo.settings import GatewaySettings

AUDIO_ERRORS = {
    **ERRORS,
    413: {"model": ERRORS[422]["model"], "description": "File larger or audio longer than the limits"},
    415: {"model": ERRORS[422]["model"], "description": "Not audio in a supported format"},
}
OPENAI_FORMATS = {
    "description": "`json` or `verbose_json` (JSON, below), `text` and `srt` (text/plain), `vtt` (text/vtt)",
    "content": {"text/plain": {"schema": {"type": "string"}}, "text/vtt": {"schema": {"type": "string"}}},
}


CONTEXT = "samo_upload_context"
T = TypeVar("T")


class AdmittedUpload(APIRoute):
    """A route whose upload the operation layer admits (one Whisper window) before FastAPI reads its
    form (FastAPI reads the body before the endpoint runs); the endpoint's operation finds the request
    admitted in its context, and the transcription tops the cost up to the audio's duration."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        read_form_and_run = super().get_route_handler()

        async def admitted_first(request: Request) -> Response:
            operations: Operations = request.app.state.operations
            context = request_context(request)
            with operations.admit_upload(context):
                setattr(request.state, CONTEXT, context)
                return await read_form_and_run(request)

        return admitted_first


async def _run_admitted(
    request: Request,
    file: UploadFile,
    fields: dict[str, Any],
    entry: Callable[[RequestContext, Upload], Awaitable[T]],
    settings: GatewaySettings,
) -> T | None:
    """The entry's answer for the upload the route class admitted; None when the client left (its
    transcription is then cancelled)."""
    upload = uploaded(await read_upload(file, settings), fields)
    return await unless_disconnected(request, entry(getattr(request.state, CONTEXT), upload))


async def read_upload(file: FormFile, settings: GatewaySettings) -> bytes:
    """The uploaded file's bytes (the form was read within the upload body limit), refused with 413
    when the file alone is over `max_audio_bytes`, before anything is decoded. `file`: a route's
    `UploadFile` parameter, or a file part of a form the route reads itself (`/v1/journal`)."""
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

    # form_limits: the upload form's part limits (the body's limit: gateway/http/body_limit.py).
    @router.post(
        "/v1/transcribe", response_model=Transcript, responses=AUDIO_ERRORS, form_limits=UPLOAD_FORM_LIMITS
    )
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
        operations: Operations = request.app.state.operations
        fields = {
            "language": language,
            "task": task,
            "beam_size": beam_size,
            "word_timestamps": word_timestamps,
            "model": model,
        }
        transcript = await _run_admitted(request, file, fields, operations.transcribe, settings)
        if transcript is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return answer(transcript)

    @router.post(
        "/v1/audio/transcriptions",
        response_model=OpenAITranscription | OpenAIVerboseTranscription,
        responses={200: OPENAI_FORMATS, **AUDIO_ERRORS},
        form_limits=UPLOAD_FORM_LIMITS,
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
        operations: Operations = request.app.state.operations
        fields = {
            "model": model,
            "language": language,
            "prompt": prompt,
            "response_format": response_format,
            "temperature": temperature,
            "timestamp_granularities": timestamp_granularities,
        }
        reply = await _run_admitted(request, file, fields, operations.openai_transcription, settings)
        if reply is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        if isinstance(reply.body, str):
            return PlainTextResponse(reply.body, media_type=reply.media_type)
        return answer(reply.body)

    return router
