"""The error taxonomy mapped to HTTP, once. Validation messages never echo the input."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.errors import RETRYABLE, ErrorType, SamoError
from gateway.observability.request_id import current_request_id
from gateway.validation import describe_errors
from samo.settings import GatewaySettings


class ErrorDetail(BaseModel):
    type: str
    message: str
    request_id: str | None = None
    """The request's ID (also the `X-Request-ID` response header): quote it to find the request's logs."""


class ErrorResponse(BaseModel):
    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        401: "Missing or unknown API key or bearer token (WWW-Authenticate), when credentials are configured",
        403: "The credential lacks the operation's scope",
        404: "Unknown model",
        413: "Request body over the limit (SAMO_MAX_BODY_BYTES)",
        422: "Invalid input (the message says which field and why)",
        429: "Too many requests in progress, or the API key's rate limit reached (Retry-After)",
        503: "Triton unreachable (Retry-After)",
        504: "Triton did not answer in time",
    }.items()
}


# RFC 6750: how to authenticate, sent with every 401.
WWW_AUTHENTICATE = 'Bearer realm="samo"'


def error_response(error: SamoError, settings: GatewaySettings) -> JSONResponse:
    headers = {}
    if error.type in RETRYABLE:
        headers["Retry-After"] = str(error.retry_after_s or settings.retry_after_s)
    if error.type is ErrorType.UNAUTHENTICATED:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    detail = ErrorDetail(type=error.type.value, message=error.message, request_id=current_request_id())
    body = ErrorResponse(error=detail)
    return JSONResponse(body.model_dump(), status_code=error.http_status, headers=headers)


def install_error_handlers(app: FastAPI, settings: GatewaySettings) -> None:
    @app.exception_handler(SamoError)
    async def _samo_error(_: Request, exc: SamoError) -> JSONResponse:
        return error_response(exc, settings)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(SamoError(ErrorType.INVALID_INPUT, describe_errors(exc.errors())), settings)
