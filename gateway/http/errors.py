"""The error taxonomy mapped to HTTP, once. Validation messages never echo the input."""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from gateway.errors import RETRYABLE, ErrorType, SamoError
from gateway.validation import describe_errors
from samo.settings import GatewaySettings


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


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


def error_response(error: SamoError, settings: GatewaySettings) -> JSONResponse:
    headers = {"Retry-After": str(settings.retry_after_s)} if error.type in RETRYABLE else None
    body = ErrorResponse(error=ErrorDetail(type=error.type.value, message=error.message))
    return JSONResponse(body.model_dump(), status_code=error.http_status, headers=headers)


def install_error_handlers(app: FastAPI, settings: GatewaySettings) -> None:
    @app.exception_handler(SamoError)
    async def _samo_error(_: Request, exc: SamoError) -> JSONResponse:
        return error_response(exc, settings)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(SamoError(ErrorType.INVALID_INPUT, describe_errors(exc.errors())), settings)
