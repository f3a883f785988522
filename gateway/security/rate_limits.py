"""Per-principal rate limits on the `limits` library: requests, and seconds of audio.

Sliding-window counters (a refused hit consumes nothing), in this process's memory or in Redis so
that replicas share them. If Redis cannot be reached, requests are let through and a warning is
logged: the limiter must not take the service down with it.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from gateway.errors import ErrorType, SamoError

logger = logging.getLogger(__name__)

# A slow Redis must not hold requests: its answers are awaited this long at most, seconds.
REDIS_TIMEOUT_S = 1.0


def parse_limit(setting: str, value: str | None) -> tuple[RateLimitItem, ...]:
    """`120/minute` or `10/second;600/hour` in limits' notation; a bad value names its setting."""
    if not value:
        return ()
    try:
        return tuple(parse_many(value))
    except ValueError:
        raise ValueError(f"{setting}: `{value}` is not a rate limit such as `120/minute`") from None


def open_storage(uri: str | None) -> Storage:
    """`redis://...` and `rediss://...` (shared by replicas) or `memory://` (default, this process)."""
    uri = uri or "memory://"
    options: dict[str, float | str | bool] = {"wrap_exceptions": True}
    if uri.startswith("redis"):
        options |= {"connect_timeout": REDIS_TIMEOUT_S, "stream_timeout": REDIS_TIMEOUT_S}
    storage = storage_from_string(f"async+{uri}", **options)
    if not isinstance(storage, Storage):  # limits types the factory for both kinds; `async+` makes this one
        raise TypeError(f"limits made a {type(storage).__name__}, not an asyncio storage")
    return storage


def _describe(item: RateLimitItem) -> str:
    multiples = f"{item.multiples} " if item.multiples > 1 else ""
    return f"{item.amount} per {multiples}{item.GRANULARITY.name}"


class RateLimits:
    """The request and audio limits of one gateway, counted per principal name."""

    def __init__(
        self,
        requests: tuple[RateLimitItem, ...],
        audio_seconds: tuple[RateLimitItem, ...],
        storage: Storage,
    ) -> None:
        self.requests = requests
        self.audio_seconds = audio_seconds
        self.storage = storage
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._storage_failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.requests or self.audio_seconds)

    async def hit_request(self, principal: str) -> None:
        """Count one request, or raise `rate_limited` with when to retry."""
        for item in self.requests:
            if not await self._hit(item, principal, "requests", 1):
                retry = await self._retry_after_s(item, principal, "requests")
                raise SamoError(
                    ErrorType.RATE_LIMITED,
                    f"rate limit of {_describe(item)} requests reached; retry in {retry} s",
                    retry_after_s=retry,
                )

    async def charge_audio(self, principal: str, seconds: float) -> None:
        """Count `seconds` of audio (rounded up), or raise `rate_limited` with when to retry."""
        cost = max(1, math.ceil(seconds))
        for item in self.audio_seconds:
            if cost > item.amount:  # waiting would not help: too large, not rate limited
                raise SamoError(
                    ErrorType.TOO_LARGE,
                    f"audio of {cost} s is longer than the audio rate limit of {_describe(item)} seconds allows",
                )
            if not await self._hit(item, principal, "audio-seconds", cost):
                retry = await self._retry_after_s(item, principal, "audio-seconds")
                raise SamoError(
                    ErrorType.RATE_LIMITED,
                    f"audio rate limit of {_describe(item)} seconds reached ({cost} s more asked); "
                    f"retry in {retry} s",
                    retry_after_s=retry,
                )

    async def _hit(self, item: RateLimitItem, principal: str, kind: str, cost: int) -> bool:
        try:
            allowed = await self._limiter.hit(item, kind, principal, cost=cost)
        except StorageError as exc:
            if not self._storage_failing:
                logger.warning(
                    "rate-limit storage unreachable, requests pass unlimited until it answers: %s",
                    type(exc.storage_error).__name__,
                )
                self._storage_failing = True
            return True
        if self._storage_failing:
            logger.info("rate-limit storage answers again")
            self._storage_failing = False
        return allowed

    async def _retry_after_s(self, item: RateLimitItem, principal: str, kind: str) -> int:
        """Whole seconds until the window frees room, at least 1 (what Retry-After carries)."""
        try:
            stats = await self._limiter.get_window_stats(item, kind, principal)
        except StorageError:
            return int(item.get_expiry())
        return max(1, math.ceil(stats.reset_time - time.time()))
