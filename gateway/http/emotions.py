"""POST /v1/emotions: the body (parsed by FastAPI, so /docs shows its schema) to the operation, and the
`EmotionResult` back."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.emotions.request import emotion_request_model
from gateway.http.answers import answer
from gateway.http.context import request_context
from gateway.http.errors import ERRORS
from gateway.operations import Operations
from gateway.results import EmotionResult
from samo.settings import GatewaySettings


def emotion_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["emotions"])
    body_model = emotion_request_model(settings)

    @router.post("/v1/emotions", response_model=EmotionResult, responses=ERRORS)
    async def detect_emotions(body: body_model, request: Request) -> Response:  # type: ignore[valid-type]
        """Emotion labels and scores for each text (28 GoEmotions labels for the default model)."""
        operations: Operations = request.app.state.operations
        return answer(await operations.emotions(request_context(request), body))

    return router
