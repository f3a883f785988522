"""Concurrent live sessions, counted across replicas: a tenant's `live_sessions` quota and the per-key
`realtime_max_sessions_per_key`.

A session holds a lease in each count it is limited by: a member of a Redis sorted set whose score is
when the lease runs out. The gateway renews its sessions' leases every third of `realtime_session_lease_s`
and removes them when a session ends, however it ends (closed, idle, expired, flooded, the client gone,
the gateway draining). A gateway that dies without removing them (SIGKILL, a lost node) stops renewing
them, and they run out within one lease: its slots are free again on every replica. Taking a slot is
one Lua script over every count at once (expired leases dropped, every count checked, then a lease
added in each, or none), with Redis's own clock, so replicas with skewed clocks agree.

Without Redis (`memory://`, one process) the counts are this process's own. When Redis cannot be
reached, a tenant's quota refuses new sessions (UNAVAILABLE) unless `SAMO_QUOTA_STORAGE_FAILURE=allow`;
the per-key limit lets them through, as the per-key rate limits do; either way it is logged once per
outage and counted in `samo_quota_storage_failures_total`. Sessions already open go on while renewals fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import coredis
import coredis.exceptions

from gateway.errors import ErrorType, SamoError

logger = logging.getLogger(__name__)

PREFIX = "samo:live-sessions:"
REDIS_TIMEOUT_S = 1.0

_TAKE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease * 2)
end
return 0
"""
"""Returns 0 with a lease taken in every count, or the 1-based index of the first count that is full."""

_RENEW = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + math.floor(tonumber(now_parts[2]) / 1000)
local lease = tonumber(ARGV[2])
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease * 2)
end
return 0
"""


@dataclass(frozen=True)
class SlotLimit:
    """One count a session is limited by: at most `limit` sessions hold a lease in `key` at once."""

    key: str
    limit: int
    refusal: str
    """The `rate_limited` message when the count is full."""
    fail_closed: bool
    """Refuse the session (UNAVAILABLE) when the count cannot be read, rather than let it through."""


class SlotFull(Exception):
    def __init__(self, limit: SlotLimit) -> None:
        super().__init__(limit.refusal)
        self.limit = limit


class LeaseStore(Protocol):
    async def take(self, holder: str, limits: Sequence[SlotLimit], lease_s: float) -> None:
        """A lease in every count, or `SlotFull` naming the first full one (then none is taken)."""
        ...

    async def renew(self, holder: str, keys: Sequence[str], lease_s: float) -> None: ...

    async def drop(self, holder: str, keys: Sequence[str]) -> None: ...

    async def close(self) -> None: ...


class StoreUnreachable(Exception):
    pass


class MemoryLeases:
    """This process's counts (no Redis): leases in a dict, expiring as Redis's would."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, float]] = {}

    async def take(self, holder: str, limits: Sequence[SlotLimit], lease_s: float) -> None:
        now = time.monotonic()
        for limit in limits:
            held = self._held.setdefault(limit.key, {})
            for other in [h for h, until in held.items() if until <= now]:
                del held[other]
            if len(held) >= limit.limit:
                raise SlotFull(limit)
        for limit in limits:
            self._held[limit.key][holder] = now + lease_s

    async def renew(self, holder: str, keys: Sequence[str], lease_s: float) -> None:
        until = time.monotonic() + lease_s
        for key in keys:
            self._held.setdefault(key, {})[holder] = until

    async def drop(self, holder: str, keys: Sequence[str]) -> None:
        for key in keys:
            held = self._held.get(key, {})
            held.pop(holder, None)
            if not held:
                self._held.pop(key, None)

    async def close(self) -> None:
        self._held.clear()


class RedisLeases:
    """The counts in Redis, shared by every replica and worker that uses the same Redis."""

    def __init__(self, uri: str) -> None:
        self._client: Any = coredis.Redis.from_url(
            uri, connect_timeout=REDIS_TIMEOUT_S, stream_timeout=REDIS_TIMEOUT_S
        )
        self._take = self._client.register_script(_TAKE)
        self._renew = self._client.register_script(_RENEW)

    async def _call(self, command: Callable[[], Any]) -> Any:
        try:
            return await command()
        except (coredis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise StoreUnreachable(type(exc).__name__) from exc

    async def take(self, holder: str, limits: Sequence[SlotLimit], lease_s: float) -> None:
        keys = [PREFIX + limit.key for limit in limits]
        args = [holder, _ms(lease_s), *(limit.limit for limit in limits)]
        full = int(await self._call(lambda: self._take(keys=keys, args=args)))
        if full:
            raise SlotFull(limits[full - 1])

    async def renew(self, holder: str, keys: Sequence[str], lease_s: float) -> None:
        prefixed = [PREFIX + key for key in keys]
        await self._call(lambda: self._renew(keys=prefixed, args=[holder, _ms(lease_s)]))

    async def drop(self, holder: str, keys: Sequence[str]) -> None:
        for key in keys:
            await self._call(lambda key=key: self._client.zrem(PREFIX + key, [holder]))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.connection_pool.disconnect()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class LiveSlots:
    """The leases of this process's live sessions, and the task that renews them."""

    def __init__(
        self,
        store: LeaseStore,
        lease_s: float,
        *,
        retry_after_s: int = 1,
        on_storage_failure: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.lease_s = lease_s
        self.retry_after_s = retry_after_s
        self._on_storage_failure = on_storage_failure
        self._sessions: dict[str, tuple[str, ...]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._failing = False

    @classmethod
    def open(
        cls,
        storage_uri: str | None,
        lease_s: float,
        *,
        retry_after_s: int = 1,
        on_storage_failure: Callable[[], None] | None = None,
    ) -> LiveSlots:
        uri = storage_uri or "memory://"
        store: LeaseStore = RedisLeases(uri) if uri.startswith("redis") else MemoryLeases()
        return cls(store, lease_s, retry_after_s=retry_after_s, on_storage_failure=on_storage_failure)

    @contextlib.asynccontextmanager
    async def held(self, limits: Sequence[SlotLimit]) -> AsyncIterator[None]:
        """A slot in every count of `limits` for the block: `rate_limited` (with the count's message) when
        one is full, UNAVAILABLE when the counts cannot be read and a count fails closed."""
        if not limits:
            yield
            return
        holder = secrets.token_hex(12)
        if not await self._take(holder, limits):
            yield  # uncounted: the counts could not be read, and none of them fails closed
            return
        keys = tuple(limit.key for limit in limits)
        self._sessions[holder] = keys
        try:
            yield
        finally:
            del self._sessions[holder]
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._drop(holder, keys))

    async def _take(self, holder: str, limits: Sequence[SlotLimit]) -> bool:
        """True with the leases taken; False when the counts cannot be read and no count fails closed."""
        try:
            await self.store.take(holder, limits, self.lease_s)
        except SlotFull as full:
            raise SamoError(
                ErrorType.RATE_LIMITED, full.limit.refusal, retry_after_s=self.retry_after_s
            ) from None
        except StoreUnreachable as exc:
            self._failed(exc)
            if any(limit.fail_closed for limit in limits):
                raise SamoError(
                    ErrorType.UNAVAILABLE, "the live session counters cannot be reached; retry later"
                ) from None
            return False
        self._answered()
        return True

    async def _drop(self, holder: str, keys: Sequence[str]) -> None:
        try:
            await self.store.drop(holder, keys)
        except StoreUnreachable as exc:  # the leases run out on their own
            self._failed(exc)

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._renew_forever())

    async def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        await self.store.close()

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            for holder, keys in list(self._sessions.items()):
                try:
                    await self.store.renew(holder, keys, self.lease_s)
                except StoreUnreachable as exc:
                    self._failed(exc)
                    break
            else:
                if self._sessions:
                    self._answered()

    def _failed(self, exc: StoreUnreachable) -> None:
        if self._on_storage_failure is not None:
            self._on_storage_failure()
        if not self._failing:
            logger.warning("live session counters unreachable: %s", exc)
            self._failing = True

    def _answered(self) -> None:
        if self._failing:
            logger.info("live session counters answer again")
            self._failing = False
