"""The request ID: accepted from the client when it is short and plain, made here otherwise.

It lives in a context variable, so that every log line, span and Triton call of the request reads it
without being handed it: asyncio tasks and `to_thread` calls copy the context they start in.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar

HEADER = "X-Request-ID"
METADATA_KEY = "x-request-id"
"""The gRPC metadata key (lower case, as gRPC requires)."""
MAX_LENGTH = 64
# Client bytes end up in logs and in Triton's log: only characters that cannot forge a log line or
# smuggle markup are accepted (UUIDs, ULIDs, trace-style IDs all fit).
_SAFE = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_LENGTH}}}")

_current: ContextVar[str | None] = ContextVar("samo_request_id", default=None)


def new_request_id() -> str:
    """32 random hex digits (a UUID4's worth of randomness, without building the UUID)."""
    return os.urandom(16).hex()


def accept_request_id(offered: str | bytes | None) -> str:
    """The client's ID when it is safe to log, else a new one (never an error: IDs are a courtesy)."""
    if isinstance(offered, bytes):
        offered = offered.decode("latin-1")
    if offered and _SAFE.fullmatch(offered):
        return offered
    return new_request_id()


def bind_request_id(request_id: str) -> None:
    """Make `request_id` the current request's ID for the rest of this task (and tasks it starts).

    Not reset afterwards: uvicorn and grpc.aio run each request in a task of its own, whose context
    ends with it, and the servers' own error lines after the handler still carry the ID.
    """
    _current.set(request_id)


def current_request_id() -> str | None:
    """The ID of the request this code runs for; None outside a request (start-up, readiness loop)."""
    return _current.get()
