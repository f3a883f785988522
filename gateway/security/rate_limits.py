"""Rate limits on the `limits` library: requests, seconds of audio and generated tokens, counted per
principal (`SAMO_RATE_LIMIT`) or per tenant (the tenants' quotas, gateway/security/quotas.py).

Sliding-window counters (a refused hit consumes nothing), in this process's memory or in Redis so
that replicas share them. If Redis cannot be reached, the per-principal limits let requests through
(the limiter must not take the service down with it); the tenants' quotas refuse them unless the
operator chose otherwise (`fail_closed`). Either way a warning is logged and the failure counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

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
        *,
        generated_tokens: tuple[RateLimitItem, ...] = (),
        name: str = "rate limit",
        fail_closed: bool = False,
        on_storage_failure: Callable[[], None] | None = None,
    ) -> None:
        self.requests = requests
        self.audio_seconds = audio_seconds
        self.generated_tokens = generated_tokens
        self.storage = storage
        self.name = name
        """How refusals name these limits: `rate limit`, `tenant quota`."""
        self.fail_closed = fail_closed
        self._on_storage_failure = on_storage_failure
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._storage_failing = False

    @property
    def enabled(self) -> bool:
        return bool(self.requests or self.audio_seconds or self.generated_tokens)

    async def hit_request(self, principal: str) -> None:
        """Count one request, or raise `rate_limited` with when to retry."""
        for item in self.requests:
            if not await self._hit(item, principal, "requests", 1):
                raise await self._limited(
                    item, principal, "requests", f"{self.name} of {_describe(item)} requests"
                )

    async def charge_audio(self, principal: str, seconds: float) -> None:
        """Count `seconds` of audio (rounded up), or raise `rate_limited` with when to retry."""
        cost = max(1, math.ceil(seconds))
        for item in self.audio_seconds:
            if cost > item.amount:  # waiting would not help: too large, not rate limited
                raise SamoError(
                    ErrorType.TOO_LARGE,
                    f"audio of {cost} s is longer than the audio {self.name} of {_describe(item)} seconds allows",
                )
            if not await self._hit(item, principal, "audio-seconds", cost):
                what = f"audio {self.name} of {_describe(item)} seconds"
                raise await self._limited(item, principal, "audio-seconds", what, f" ({cost} s more asked)")

    async def check_tokens(self, principal: str) -> None:
        """Refuse (`rate_limited`) while the generated-tokens budget has no token left; what a request
        generates is charged once it is known (`charge_tokens`)."""
        for item in self.generated_tokens:
            try:
                room = await self._limiter.test(item, "generated-tokens", principal)
            except StorageError as exc:
                room = self._storage_failed(exc)
            if not room:
                what = f"generated-tokens {self.name} of {_describe(item)} tokens"
                raise await self._limited(item, principal, "generated-tokens", what)

    async def charge_tokens(self, principal: str, tokens: int) -> None:
        """Count `tokens` generated, up to what the window has left (the work is done: never refused)."""
        for item in self.generated_tokens:
            try:
                stats = await self._limiter.get_window_stats(item, "generated-tokens", principal)
                cost = min(tokens, stats.remaining)
                if cost > 0:
                    await self._limiter.hit(item, "generated-tokens", principal, cost=cost)
            except StorageError as exc:
                self._storage_failed(exc, refuse=False)

    def _storage_failed(self, exc: StorageError, *, refuse: bool | None = None) -> bool:
        """Logged once per outage and counted every time; True to let the request pass, or UNAVAILABLE."""
        refuse = self.fail_closed if refuse is None else refuse
        if self._on_storage_failure is not None:
            self._on_storage_failure()
        if not self._storage_failing:
            outcome = "requests are refused" if refuse else "requests pass unlimited"
            logger.warning(
                "%s storage unreachable, %s until it answers: %s",
                "rate-limit" if self.name == "rate limit" else self.name,
                outcome,
                type(exc.storage_error).__name__,
            )
            self._storage_failing = True
        if refuse:
            raise SamoError(ErrorType.UNAVAILABLE, f"the {self.name} counters cannot be reached; retry later")
        return True

    async def _hit(self, item: RateLimitItem, principal: str, kind: str, cost: int) -> bool:
        try:
            allowed = await self._limiter.hit(item, kind, principal, cost=cost)
        except StorageError as exc:
            return self._storage_failed(exc)
        if self._storage_failing:
            logger.info("rate-limit storage answers again")
            self._storage_failing = False
        return allowed

    async def _limited(
        self, item: RateLimitItem, principal: str, kind: str, what: str, detail: str = ""
    ) -> SamoError:
        """`rate_limited`: `<what> reached<detail>; retry in N s`, with N as Retry-After."""
        retry = await self._retry_after_s(item, principal, kind)
        return SamoError(
            ErrorType.RATE_LIMITED, f"{what} reached{detail}; retry in {retry} s", retry_after_s=retry
        )

    async def _retry_after_s(self, item: RateLimitItem, principal: str, kind: str) -> int:
        """Whole seconds until the window frees room, at least 1 (what Retry-After carries)."""
        try:
            stats = await self._limiter.get_window_stats(item, kind, principal)
        except StorageError:
            return int(item.get_expiry())
        return max(1, math.ceil(stats.reset_time - time.time()))
