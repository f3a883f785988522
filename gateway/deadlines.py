"""A request's deadline, carried to every Triton call the request makes.

The deadline is set where the request is admitted (its length follows the request's work, and grows
when the work turns out larger, as audio does once its duration is read); the request's context
(gateway/context.py) carries it to the Triton client, which reads it for each call.
"""

from __future__ import annotations

import time

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

    def remaining(self) -> float:
        """`left()`, or DEADLINE_EXCEEDED once it has passed."""
        left = self.left()
        if left <= 0:
            raise SamoError(ErrorType.DEADLINE_EXCEEDED, EXPIRED_MESSAGE)
        return left
