"""POST /v1/emotions: converts the body to service options and the result back to JSON."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.emotions.request import emotion_request_model
from gateway.emotions.service import EmotionOptions, EmotionResult, LabelScore, ModelInfo, TextEmotions
from gateway.http.schemas import EmotionResponse, ErrorResponse
from gateway.services import Services
from samo.settings import GatewaySettings

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        404: "Unknown model",
        422: "Invalid input (the message says which field and why)",
        429: "Too many requests in progress (Retry-After)",
        503: "Triton unreachable (Retry-After)",
        504: "Triton did not answer in time",
    }.items()
}


def text_emotions_body(text: TextEmotions) -> dict[str, Any]:
    return {
        "labels": [{"label": s.label, "score": s.score} for s in text.labels],
        "scores": dict(text.scores),
        "truncated": text.truncated,
        "tokens": text.tokens,
    }


def result_body(result: EmotionResult) -> dict[str, Any]:
    return {
        "model": {
            "name": result.model.name,
            "version": result.model.version,
            "kind": result.model.kind,
            "source": result.model.source,
            "description": result.model.description,
        },
        "results": [text_emotions_body(text) for text in result.results],
        "options": {"threshold": result.options.threshold, "top_k": result.options.top_k},
    }


def text_emotions_from_body(text: dict[str, Any]) -> TextEmotions:
    return TextEmotions(
        labels=tuple(LabelScore(item["label"], item["score"]) for item in text["labels"]),
        scores=dict(text["scores"]),
        truncated=text["truncated"],
        tokens=text["tokens"],
    )


def model_from_body(model: dict[str, Any]) -> ModelInfo:
    return ModelInfo(model["name"], model["version"], model["kind"], model["source"], model["description"])


def result_from_body(body: dict[str, Any]) -> EmotionResult:
    """The inverse of `result_body`, for clients."""
    return EmotionResult(
        results=tuple(text_emotions_from_body(text) for text in body["results"]),
        model=model_from_body(body["model"]),
        options=EmotionOptions(threshold=body["options"]["threshold"], top_k=body["options"]["top_k"]),
    )


def emotion_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["emotions"])
    body_model = emotion_request_model(settings)

    @router.post("/v1/emotions", response_model=EmotionResponse, responses=ERRORS)
    async def detect_emotions(body: body_model, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        """Emotion labels and scores for each text (28 GoEmotions labels for the default model)."""
        services: Services = request.app.state.services
        options = EmotionOptions(threshold=body.threshold, top_k=body.top_k, model=body.model)
        with services.admitted():
            result = await services.emotions.detect(body.texts, options)
        return JSONResponse(result_body(result))

    return router
