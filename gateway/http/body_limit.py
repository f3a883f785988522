"""Request body limits, enforced before the body is in memory, answered with the error body.

`BodyLimit` (pure ASGI) refuses a request whose `Content-Length` is over its limit before the app runs,
and one sent without it (chunked) as soon as the bytes received pass it; either way the rest of the body
is never read (the server closes the connection instead of draining it). Starlette ships a body limit
middleware too, but it answers every oversized request in plain text, whatever the app sends.

The limit is `max_body_bytes`, or, for a multipart upload to an audio route, `max_audio_bytes` plus
`MULTIPART_OVERHEAD`. Upload forms are also capped part by part (`UPLOAD_FORM_LIMITS`: one file, a
few short fields), so a form cannot carry thousands of parts or a megabyte-long "language"; a form over
those limits, or malformed, gets 422.
"""

from __future__ import annotations

from typing import TypedDict

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import ErrorType, SamoError, invalid_input
from gateway.http.errors import error_response
from samo.settings import GatewaySettings

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes of multipart framing and form fields an upload may carry besides its file."""

UPLOAD_PATHS = frozenset({"/v1/transcribe", "/v1/audio/transcriptions", "/v1/journal"})
"""Routes that take audio as multipart uploads."""
FILES_PATH = "/v1/files"
"""Batch files (`batch_max_file_bytes`)."""


class FormLimits(TypedDict, total=False):
    """Limits on a multipart form's parts: FastAPI's route `form_limits`, Starlette's `Request.form()`
    keywords."""

    max_files: int
    max_fields: int
    max_part_size: int


UPLOAD_FORM_LIMITS: FormLimits = {"max_files": 1, "max_fields": 16, "max_part_size": 16 * 1024}
"""Parts of an upload form: the file, and at most 16 fields of at most 16 KiB each (the OpenAI route's
`prompt` is the longest, 1,000 characters)."""

ROUTING_ERRORS = {
    404: SamoError(ErrorType.NOT_FOUND, "no such route; the API is described at /docs"),
    405: SamoError(ErrorType.METHOD_NOT_ALLOWED, "this route does not take that HTTP method (see `Allow`)"),
}
"""Starlette's own routing answers, given the gateway's error body like every other 4xx."""

_MB = 1 << 20


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes its limit. An HTTPException, so that FastAPI lets it
    through its body parsing (which turns other exceptions into 400) to the handler below."""

    def __init__(self, error: SamoError) -> None:
        super().__init__(status_code=413, detail=error.message)
        self.error = error


class BodyLimit:
    """Pure ASGI middleware: a byte limit on every HTTP request body (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: GatewaySettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        multipart = headers.get(b"content-type", b"").startswith(b"multipart/")
        upload = scope["path"] in UPLOAD_PATHS and multipart
        if scope["path"] == FILES_PATH and multipart:
            limit = self.settings.batch_max_file_bytes + MULTIPART_OVERHEAD
        elif upload:
            limit = self.settings.max_audio_bytes + MULTIPART_OVERHEAD
        else:
            limit = self.settings.max_body_bytes
        declared = _content_length(headers.get(b"content-length"))
        if declared is not None and declared > limit:
            await error_response(self._error(upload, limit, declared), self.settings)(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(self._error(upload, limit, None))
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge as exc:  # raised where no exception handler saw it
            if started:
                raise
            await error_response(exc.error, self.settings)(scope, receive, send)

    def _error(self, upload: bool, limit: int, declared: int | None) -> SamoError:
        if upload:
            # The form's framing is not the caller's concern: state the file limit they configured.
            what, limit = "audio file", self.settings.max_audio_bytes
        else:
            what = "request body"
        size = f"is {declared / _MB:.1f} MB" if declared is not None else "is larger"
        return SamoError(ErrorType.TOO_LARGE, f"{what} {size}; the limit is {limit / _MB:.1f} MB")


def _content_length(value: bytes | None) -> int | None:
    if value is None or not value.isdigit():
        return None  # a malformed header is the server's to refuse; the streamed count still applies
    return int(value)


def install_body_limits(app: FastAPI, settings: GatewaySettings) -> None:
    """`BodyLimit` on `app`, and the gateway's error body for the 413 it raises inside the app and for a
    multipart form that breaks the part limits or is malformed (Starlette's 400, here 422)."""
    app.add_middleware(BodyLimit, settings=settings)

    @app.exception_handler(HTTPException)
    async def _http_exception(request: Request, exc: HTTPException) -> Response:
        if isinstance(exc, BodyTooLarge):
            return error_response(exc.error, settings)
        if exc.status_code == 400 and request.headers.get("content-type", "").startswith("multipart/"):
            # python-multipart's and Starlette's messages name the limit, never the content.
            return error_response(invalid_input(f"multipart form: {exc.detail}"), settings)
        if exc.status_code == 400:  # FastAPI's JSON parsing: not UTF-8 JSON (its message names no content)
            return error_response(invalid_input(f"request body: {exc.detail}"), settings)
        if exc.status_code in ROUTING_ERRORS:  # Starlette's router: no such path, or not this method
            response = error_response(ROUTING_ERRORS[exc.status_code], settings)
            response.headers.update(exc.headers or {})  # 405's `Allow`
            return response
        return await http_exception_handler(request, exc)
