"""POST /v1/journal: a journal entry as JSON text or as multipart audio; JSON or Server-Sent Events out.

The operation admits an audio entry before its form is read (the form is read by the upload it is
handed); a text entry once its text is known (its cost depends on its sentences). Body limits:
gateway/http/body_limit.py.
"""

import contextlib
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.errors import invalid_input
from gateway.http.answers import answer
from gateway.http.body_limit import UPLOAD_FORM_LIMITS
from gateway.http.context import request_context
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, unless_disconnected
from gateway.http.errors import ERRORS
from gateway.http.sse import EVENTS, event_response, wants_events
from gateway.http.transcription import AUDIO_ERRORS, read_upload
from gateway.journal.request import JournalAudioOptions, journal_text_model
from gateway.operations import AudioUpload, Operations, OperationStream, Upload
from gateway.results import JournalAnalysis, Segment
from samo.settings import GatewaySettings


def journal_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["journal"])
    JournalText = journal_text_model(settings)

    request_body = {
        "content": {
            "application/json": {"schema": JournalText.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **JournalAudioOptions.model_json_schema()["properties"],
                    },
                }
            },
        },
        "required": True,
    }

    @router.post(
        "/v1/journal",
        response_model=JournalAnalysis,
        responses={200: EVENTS, **ERRORS, **AUDIO_ERRORS},
        openapi_extra={"requestBody": request_body},
    )
    async def journal(request: Request) -> Response:
        """Transcript (audio entries), emotions for the entry and per sentence, and a summary.

        With `Accept: text/event-stream`, transcript segments arrive as `segment` events while they are
        decoded, then one `analysis` event.
        """
        operations: Operations = request.app.state.operations
        context = request_context(request)
        content_type = request.headers.get("content-type", "")
        entry: dict[str, Any] | Upload
        if content_type.startswith("multipart/form-data"):
            entry = _form_upload(request, settings)
        else:
            entry = await _json_entry(request)
        # The stream's first item comes once the form is read: only then may the disconnect watch
        # (`unless_disconnected`) read the request's `receive`, or it would take the upload's chunks.
        stream = await operations.journal_stream(context, entry)
        if wants_events(request):
            return event_response(stream, _render, JournalAnalysis)
        analysis = await unless_disconnected(request, _analysis(stream))
        if analysis is None:
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        return answer(analysis)

    return router


async def _analysis(stream: OperationStream[Segment | JournalAnalysis]) -> JournalAnalysis:
    async with contextlib.aclosing(stream.items()) as items:
        async for item in items:
            if isinstance(item, JournalAnalysis):
                return item
    raise AssertionError("a journal stream ends with its analysis")


def _form_upload(request: Request, settings: GatewaySettings) -> Upload:
    """Reads the multipart form (once the operation has admitted the entry): the file and the fields."""

    async def read() -> AudioUpload:
        async with request.form(**UPLOAD_FORM_LIMITS) as form:
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise invalid_input("file: field required")
            fields = {k: v for k, v in form.items() if k != "file" and v != ""}
            return AudioUpload(await read_upload(upload, settings), fields)

    return read


async def _json_entry(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body() or b"null")
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
        raise invalid_input("request body is not valid JSON") from None
    if not isinstance(payload, dict):
        raise invalid_input("body: send a JSON object with `text`, or multipart audio with `file`")
    return payload


def _render(item: Segment | JournalAnalysis) -> tuple[str, dict[str, Any]]:
    if isinstance(item, JournalAnalysis):
        return "analysis", item.body()
    return "segment", item.model_dump(include={"start", "end", "text"})
