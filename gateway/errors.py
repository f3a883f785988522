"""One error taxonomy for the gateway, mapped once per transport.

Messages are safe to return and log: they never contain entry text.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorType(StrEnum):
    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    TOO_LARGE = "too_large"
    UNSUPPORTED_MEDIA = "unsupported_media"
    OVERLOADED = "overloaded"
    UNAVAILABLE = "upstream_unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    METHOD_NOT_ALLOWED = "method_not_allowed"


HTTP_STATUS: dict[ErrorType, int] = {
    ErrorType.INVALID_INPUT: 422,
    ErrorType.NOT_FOUND: 404,
    ErrorType.TOO_LARGE: 413,
    ErrorType.UNSUPPORTED_MEDIA: 415,
    ErrorType.OVERLOADED: 429,
    ErrorType.UNAVAILABLE: 503,
    ErrorType.DEADLINE_EXCEEDED: 504,
    ErrorType.INTERNAL: 500,
    ErrorType.UNAUTHENTICATED: 401,
    ErrorType.FORBIDDEN: 403,
    ErrorType.RATE_LIMITED: 429,
    ErrorType.METHOD_NOT_ALLOWED: 405,
}

# gRPC status code names (grpc.StatusCode members), so this module needs no grpc import.
GRPC_STATUS: dict[ErrorType, str] = {
    ErrorType.INVALID_INPUT: "INVALID_ARGUMENT",
    ErrorType.NOT_FOUND: "NOT_FOUND",
    ErrorType.TOO_LARGE: "RESOURCE_EXHAUSTED",
    ErrorType.UNSUPPORTED_MEDIA: "INVALID_ARGUMENT",
    ErrorType.OVERLOADED: "RESOURCE_EXHAUSTED",
    ErrorType.UNAVAILABLE: "UNAVAILABLE",
    ErrorType.DEADLINE_EXCEEDED: "DEADLINE_EXCEEDED",
    ErrorType.INTERNAL: "INTERNAL",
    ErrorType.UNAUTHENTICATED: "UNAUTHENTICATED",
    ErrorType.FORBIDDEN: "PERMISSION_DENIED",
    ErrorType.RATE_LIMITED: "RESOURCE_EXHAUSTED",
    ErrorType.METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
}
# Trailing metadata key naming the exact ErrorType, since gRPC codes are coarser than the taxonomy.
GRPC_ERROR_TYPE_KEY = "samo-error-type"
# Trailing metadata with the seconds to wait before retrying, like HTTP's Retry-After.
GRPC_RETRY_AFTER_KEY = "retry-after"

RETRYABLE = frozenset({ErrorType.OVERLOADED, ErrorType.UNAVAILABLE, ErrorType.RATE_LIMITED})


class SamoError(Exception):
    def __init__(self, error_type: ErrorType, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.type = error_type
        self.message = message
        self.retry_after_s = retry_after_s
        """When to retry, seconds, where the error knows it (rate limits); else the configured default."""

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.type]


def invalid_input(message: str) -> SamoError:
    return SamoError(ErrorType.INVALID_INPUT, message)


def not_found(message: str) -> SamoError:
    return SamoError(ErrorType.NOT_FOUND, message)
