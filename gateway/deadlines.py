"""A request's deadline, carried to every Triton call the request makes.

The deadline is set where the request is admitted (its length follows the request's work, and grows
when the work turns out larger, as audio does once its duration is read) and read by the Triton
client for each call. A context variable carries it, as gRPC carries deadlines, so the services in
between need no extra argument; tasks the request starts inherit it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from typing import Any

from gateway.errors import ErrorType, SamoError

EXPIRED_MESSAGE = "the request ran past its deadline"


class Deadline:
    """When a request's work must be done, counted from its start (time.monotonic())."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.at = self.start + seconds

    def extend_to(self, seconds: float) -> None:
        """At least `seconds` from the start: more work, more time (never less)."""
        self.at = max(self.at, self.start + seconds)

    def left(self) -> float:
        return self.at - time.monotonic()


_current: ContextVar[Deadline | None] = ContextVar("samo_deadline", default=None)


@contextmanager
def within(deadline: Deadline) -> Iterator[Deadline]:
    """Triton calls made inside (and in tasks started inside) finish by `deadline`."""
    token = _current.set(deadline)
    try:
        yield deadline
    finally:
        reset(_current, token)


def reset(variable: ContextVar[Any], token: Token[Any]) -> None:
    """Undo a `set`. A stream its client abandoned is closed later, by the garbage collector, in another
    context, where the token does not apply; that copy of the context is read by nobody, so let it be."""
    with suppress(ValueError):
        variable.reset(token)


def time_left(default_s: float) -> float:
    """Seconds until the current request's deadline, or `default_s` outside a request. A deadline that
    has passed raises DEADLINE_EXCEEDED, so no work starts that nobody waits for."""
    deadline = _current.get()
    if deadline is None:
        return default_s
    left = deadline.left()
    if left <= 0:
        raise SamoError(ErrorType.DEADLINE_EXCEEDED, EXPIRED_MESSAGE)
    return left
