"""POST /v1/journal: a journal entry as JSON text or as multipart audio; JSON or Server-Sent Events out.

An audio entry is admitted before its form is read; a text entry once its text is known (its cost
depends on its sentences). Body limits: gateway/http/body_limit.py.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.admission import Ticket
from gateway.errors import invalid_input
from gateway.http.answers import answer
from gateway.http.body_limit import UPLOAD_FORM_LIMITS
from gateway.http.disconnect import CLIENT_CLOSED_REQUEST, unless_disconnected
from gateway.http.errors import ERRORS
from gateway.http.sse import EVENTS, event_response, wants_events
from gateway.http.transcription import AUDIO_ERRORS, read_upload
from gateway.journal.request import JournalAudioOptions, journal_text_model
from gateway.results import EmotionOptions, JournalAnalysis, Segment
from gateway.services import Services
from gateway.validation import validate_body
from samo.contracts.whisper import DecodeOptions
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
        services: Services = request.app.state.services
        costs = services.admission.costs
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            with services.admitted(costs.journal_audio(services.summarization)) as ticket:
                async with request.form(**UPLOAD_FORM_LIMITS) as form:
                    upload = form.get("file")
                    if upload is None or isinstance(upload, str):
                        raise invalid_input("file: field required")
                    fields = validate_body(
                        JournalAudioOptions, {k: v for k, v in form.items() if k != "file" and v != ""}
                    )
                    data = await read_upload(upload, settings)
                decode = validate_body(
                    DecodeOptions, {"language": fields.language, "beam_size": fields.beam_size}
                )
                options = EmotionOptions(threshold=fields.threshold, top_k=fields.top_k)
                items = services.journal.stream_audio(data, decode, options, fields.model)
                return await _respond(request, items, ticket)
        try:
            payload = json.loads(await request.body() or b"null")
        except ValueError:  # JSONDecodeError, or UnicodeDecodeError for bytes that are not UTF-8
            raise invalid_input("request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise invalid_input("body: send a JSON object with `text`, or multipart audio with `file`")
        body = validate_body(JournalText, payload)
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k)
        with services.admitted(costs.journal_text(body.text, services.summarization)) as ticket:
            return await _respond(request, services.journal.stream_text(body.text, options), ticket)

    return router


async def _respond(
    request: Request, items: AsyncIterator[Segment | JournalAnalysis], ticket: Ticket
) -> Response:
    """Events as they come (the stream keeps the ticket until it ends), or the analysis as JSON once
    done; work is cancelled if the client leaves first."""
    if wants_events(request):
        first = await anext(items)  # errors before any output are ordinary HTTP errors
        return event_response(first, items, _render, JournalAnalysis, ticket.hand_over())
    analysis = await unless_disconnected(request, _last(items))
    if analysis is None:
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    return answer(analysis)


async def _last(items: AsyncIterator[Segment | JournalAnalysis]) -> JournalAnalysis:
    async for item in items:
        if isinstance(item, JournalAnalysis):
            return item
    raise AssertionError("a journal stream ends with its analysis")


def _render(item: Segment | JournalAnalysis) -> tuple[str, dict[str, Any]]:
    if isinstance(item, JournalAnalysis):
        return "analysis", item.body()
    return "segment", item.model_dump(include={"start", "end", "text"})
