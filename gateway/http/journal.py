"""POST /v1/journal: a journal entry as JSON text or as multipart audio; JSON or Server-Sent Events out."""

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.emotions.service import EmotionOptions, EmotionResult
from gateway.errors import invalid_input
from gateway.http.emotions import (
    ERRORS,
    model_from_body,
    result_body,
    text_emotions_body,
    text_emotions_from_body,
)
from gateway.http.sse import event_response, wants_events
from gateway.http.summarization import summary_body, summary_from_body
from gateway.http.transcription import AUDIO_ERRORS, read_upload, transcript_body, transcript_from_body
from gateway.journal.request import JournalAudioOptions, journal_text_model
from gateway.journal.service import JournalAnalysis, SentenceEmotions
from gateway.services import Services
from gateway.summarization.service import SummaryOptions
from gateway.transcription.service import Segment
from gateway.validation import validate_body
from samo.contracts.whisper import DecodeOptions
from samo.settings import GatewaySettings


def analysis_body(analysis: JournalAnalysis) -> dict[str, Any]:
    emotions = result_body(analysis.emotions) if analysis.emotions else None
    return {
        "source": "audio" if analysis.transcript else "text",
        "text": analysis.text,
        "transcript": transcript_body(analysis.transcript) if analysis.transcript else None,
        "emotions": emotions["results"][0] if emotions else None,
        "sentences": [
            {"text": s.text, "emotions": text_emotions_body(s.emotions)} for s in analysis.sentences
        ],
        "summary": summary_body(analysis.summary)["results"][0] if analysis.summary else None,
        "models": {
            "emotion": emotions["model"] if emotions else None,
            "summarization": summary_body(analysis.summary)["model"] if analysis.summary else None,
            "transcription": transcript_body(analysis.transcript)["model"] if analysis.transcript else None,
        },
    }


def analysis_from_body(
    body: dict[str, Any], emotion: EmotionOptions, decode: DecodeOptions
) -> JournalAnalysis:
    """The inverse of `analysis_body`, for clients; options are the ones the client sent."""
    models = body["models"]
    emotions = None
    if body["emotions"]:
        emotions = EmotionResult(
            results=(text_emotions_from_body(body["emotions"]),),
            model=model_from_body(models["emotion"]),
            options=emotion,
        )
    summary = None
    if body["summary"]:
        envelope = {"model": models["summarization"], "results": [body["summary"]]}
        summary = summary_from_body(envelope, SummaryOptions())
    return JournalAnalysis(
        text=body["text"],
        emotions=emotions,
        sentences=tuple(
            SentenceEmotions(s["text"], text_emotions_from_body(s["emotions"])) for s in body["sentences"]
        ),
        summary=summary,
        transcript=transcript_from_body(body["transcript"], decode) if body["transcript"] else None,
    )


def segment_body(segment: Segment) -> dict[str, Any]:
    return {"start": segment.start, "end": segment.end, "text": segment.text}


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
        "/v1/journal", responses={**ERRORS, **AUDIO_ERRORS}, openapi_extra={"requestBody": request_body}
    )
    async def journal(request: Request) -> Response:
        """Transcript (audio entries), emotions for the entry and per sentence, and a summary.

        With `Accept: text/event-stream`, transcript segments arrive as `segment` events while they are
        decoded, then one `analysis` event.
        """
        services: Services = request.app.state.services
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise invalid_input("file: field required")
            fields = validate_body(
                JournalAudioOptions, {k: v for k, v in form.items() if k != "file" and v != ""}
            )
            data = await read_upload(request, upload, settings)
            decode = validate_body(
                DecodeOptions, {"language": fields.language, "beam_size": fields.beam_size}
            )
            options = EmotionOptions(threshold=fields.threshold, top_k=fields.top_k)
            items = services.journal.stream_audio(data, decode, options, fields.model)
        else:
            try:
                payload = json.loads(await request.body() or b"null")
            except json.JSONDecodeError:
                raise invalid_input("request body is not valid JSON") from None
            if not isinstance(payload, dict):
                raise invalid_input("body: send a JSON object with `text`, or multipart audio with `file`")
            body = validate_body(JournalText, payload)
            options = EmotionOptions(threshold=body.threshold, top_k=body.top_k)
            items = services.journal.stream_text(body.text, options)

        with services.admitted():
            first = await anext(items)  # errors before any output are ordinary HTTP errors
            if wants_events(request):
                # The stream runs after this returns; admission covers its start.
                return event_response(first, items, _render, JournalAnalysis)
            async for item in items:
                first = item
        assert isinstance(first, JournalAnalysis)
        return JSONResponse(analysis_body(first))

    return router


def _render(item: Segment | JournalAnalysis) -> tuple[str, dict[str, Any]]:
    if isinstance(item, JournalAnalysis):
        return "analysis", analysis_body(item)
    return "segment", segment_body(item)
