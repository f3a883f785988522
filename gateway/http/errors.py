"""The error taxonomy mapped to HTTP, once. Validation messages never echo the input."""

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from gateway.errors import RETRYABLE, ErrorType, SamoError
from samo.settings import GatewaySettings


def error_response(error: SamoError, settings: GatewaySettings) -> JSONResponse:
    headers = {"Retry-After": str(settings.retry_after_s)} if error.type in RETRYABLE else None
    body = {"error": {"type": error.type.value, "message": error.message}}
    return JSONResponse(body, status_code=error.http_status, headers=headers)


def _location(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    path = ""
    for part in parts:
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path or "body"


def describe_validation_error(exc: RequestValidationError) -> str:
    """`texts[3]: String should have at most 100 characters`; pydantic's `input` is left out."""
    messages = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            messages.append("request body is not valid JSON")
        elif error.get("type") == "missing":
            messages.append(f"{_location(tuple(error['loc']))}: field required")
        else:
            messages.append(f"{_location(tuple(error['loc']))}: {message}")
    return "; ".join(messages)


def install_error_handlers(app: FastAPI, settings: GatewaySettings) -> None:
    @app.exception_handler(SamoError)
    async def _samo_error(_: Request, exc: SamoError) -> JSONResponse:
        return error_response(exc, settings)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(SamoError(ErrorType.INVALID_INPUT, describe_validation_error(exc)), settings)
