"""POST /v1/emotions: the body to the operation, and the `EmotionResult` back.

Two doors to the same operation. The FastAPI route documents the body (OpenAPI, /docs) and answers
every request the direct path leaves to it. `DirectEmotions` (pure ASGI, inside the middlewares) serves
the requests that make up the load: a JSON body that validates, parsed and validated in one step by
pydantic-core, without FastAPI's routing, request object and dependency solving. Anything else (another
content type, a body that does not validate) goes on to the route, so every error answer is the one
FastAPI's route gives.
"""

# No `from __future__ import annotations`: FastAPI reads the route's body type (a local) from its annotation.
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.emotions.request import emotion_request_model
from gateway.errors import SamoError
from gateway.http.answers import answer
from gateway.http.context import request_context, scope_context
from gateway.http.errors import ERRORS, error_response
from gateway.operations import Operations
from gateway.results import EmotionResult
from samo.settings import GatewaySettings

PATH = "/v1/emotions"
_JSON_HEADERS = [(b"content-type", b"application/json")]


def emotion_router(settings: GatewaySettings) -> APIRouter:
    """The documented route; `DirectEmotions` (given this router's route) serves most requests first."""
    router = APIRouter(tags=["emotions"])
    body_model = emotion_request_model(settings)

    @router.post(PATH, response_model=EmotionResult, responses=ERRORS)
    async def detect_emotions(body: body_model, request: Request) -> Response:  # type: ignore[valid-type]
        """Emotion labels and scores for each text (28 GoEmotions labels for the default model)."""
        operations: Operations = request.app.state.operations
        return answer(await operations.emotions(request_context(request), body))

    return router


def _json_body(scope: Scope) -> bool:
    """Declared `application/json` (parameters such as charset allowed)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


class DirectEmotions:
    """Valid JSON requests to POST /v1/emotions, served without FastAPI's per-request work (see the
    module docstring); everything else goes on to `app`."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings, route: BaseRoute) -> None:
        self.app = app
        self.settings = settings
        self.body_model = emotion_request_model(settings)
        self.route = route
        """The documented route: what the metrics' route label reads (`scope["route"]`)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != PATH
            or scope["method"] != "POST"
            or not _json_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client left before sending its body: nobody to answer
            return
        try:
            fields = self.body_model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replayed(body, receive), send)
            return
        scope["route"] = self.route
        operations: Operations = scope["app"].state.operations
        try:
            result = await operations.emotions(scope_context(scope), fields)
        except SamoError as error:
            await error_response(error, self.settings)(scope, receive, send)
            return
        content = result.body_json()
        headers = [(b"content-length", str(len(content)).encode()), *_JSON_HEADERS]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replayed(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body already read, then whatever comes next (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
