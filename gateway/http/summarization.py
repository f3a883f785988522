"""POST /v1/summarize: converts the body to service options and the result back to JSON."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.http.emotions import ERRORS
from gateway.services import Services
from gateway.summarization.request import summary_request_model
from gateway.summarization.service import Summary, SummaryModelInfo, SummaryOptions, SummaryResult
from samo.settings import GatewaySettings


def summary_body(result: SummaryResult) -> dict[str, Any]:
    model = result.model
    return {
        "model": {
            "name": model.name,
            "method": model.method,
            "version": model.version,
            "source": model.source,
        },
        "results": [
            {
                "summary": s.text,
                "method": model.method,
                "sentences": list(s.sentences),
                "sentence_count": s.sentence_count,
                "truncated": s.truncated,
            }
            for s in result.results
        ],
        "options": {
            "max_new_tokens": result.options.max_new_tokens,
            "min_new_tokens": result.options.min_new_tokens,
            "num_beams": result.options.num_beams,
        },
    }


def summary_from_body(body: dict[str, Any], options: SummaryOptions) -> SummaryResult:
    """The inverse of `summary_body`, for clients."""
    model = body["model"]
    return SummaryResult(
        results=tuple(
            Summary(r["summary"], tuple(r["sentences"]), r["sentence_count"], r["truncated"])
            for r in body["results"]
        ),
        model=SummaryModelInfo(model["name"], model["method"], model["version"], model["source"]),
        options=options,
    )


def summarization_router(settings: GatewaySettings) -> APIRouter:
    router = APIRouter(tags=["summarization"])
    body_model = summary_request_model(settings)

    @router.post("/v1/summarize", responses=ERRORS)
    async def summarize(body: body_model, request: Request) -> JSONResponse:  # type: ignore[valid-type]
        """A summary per text. The default is extractive: central, non-redundant sentences in their order."""
        services: Services = request.app.state.services
        options = SummaryOptions(
            max_new_tokens=body.max_new_tokens,
            min_new_tokens=body.min_new_tokens,
            num_beams=body.num_beams,
            model=body.model,
        )
        with services.admitted():
            result = await services.summarization.summarize(body.texts, options)
        return JSONResponse(summary_body(result))

    return router
