"""POST /v1/emotions: converts the body to service options and sends the `EmotionResult`."""

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway.emotions.request import emotion_request_model
from gateway.http.answers import answer
from gateway.http.errors import ERRORS
from gateway.results import EmotionOptions, EmotionResult
from gateway.services import Services
from samo.settings import GatewaySettings


def emotion_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["emotions"])
    body_model = emotion_request_model(settings)

    @router.post("/v1/emotions", response_model=EmotionResult, responses=ERRORS)
    async def detect_emotions(body: body_model, request: Request) -> Response:  # type: ignore[valid-type]
        """Emotion labels and scores for each text (28 GoEmotions labels for the default model)."""
        services: Services = request.app.state.services
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k, model=body.model)
        with services.admission.admit(services.admission.costs.texts(len(body.texts))):
            result = await services.emotions.detect(body.texts, options)
        return answer(result)

    return router
