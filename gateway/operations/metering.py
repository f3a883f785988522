"""Usage metering, applied to every operation entry the same way: `@metered("emotions")`.

When the entry answers, its result's units go to the tenant's counters, the generated-tokens quota and
the usage ledger; when it fails, one row with the error type and no units. A streaming entry is metered
when its stream ends (its last item is the result; a client that leaves early is `cancelled`).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar

from gateway.context import RequestContext
from gateway.errors import SamoError
from gateway.observability.request_id import new_request_id
from gateway.operations.gate import Entry
from gateway.usage import UsageLedger, UsageRecord
from gateway.usage.ledger import now
from gateway.usage.metrics import TenantMetrics
from gateway.usage.units import Units, is_result, units_of

Owner = TypeVar("Owner", bound="Metered")
Params = ParamSpec("Params")
Answer = TypeVar("Answer")

CANCELLED = "cancelled"


@dataclass
class Meter:
    metrics: TenantMetrics
    ledger: UsageLedger | None = None

    async def answered(self, context: RequestContext, operation: str, status: str, units: Units) -> None:
        principal = context.principal
        if principal is not None and context.access is not None and units.generated_tokens:
            await context.access.charge_tokens(principal, units.generated_tokens)
        self.record(context, operation, status, units)

    def record(self, context: RequestContext, operation: str, status: str, units: Units) -> None:
        """The tenant's counters and the ledger's row, without charging generated tokens (no I/O)."""
        principal = context.principal
        tenant = principal.tenant if principal is not None else ""
        self.metrics.count(tenant, operation, status, units)
        if self.ledger is not None:
            self.ledger.record(
                UsageRecord(
                    request_id=context.request_id or new_request_id(),
                    tenant=tenant,
                    # A key's name or a token's subject; never an open gateway caller's address.
                    principal=(principal.name if principal.authenticated else principal.label)
                    if principal is not None
                    else "",
                    operation=operation,
                    model=units.model,
                    model_version=units.model_version,
                    texts=units.texts,
                    tokens=units.tokens,
                    audio_seconds=units.audio_seconds,
                    status=status,
                    at=now(),
                )
            )


class Metered(Protocol):
    @property
    def meter(self) -> Meter: ...


def metered(operation: str) -> Callable[[Entry[Owner, Params, Answer]], Entry[Owner, Params, Answer]]:
    """An entry whose answer (or failure) is metered as `operation`."""

    def wrap(entry: Entry[Owner, Params, Answer]) -> Entry[Owner, Params, Answer]:
        @functools.wraps(entry)
        async def counted(
            owner: Owner, context: RequestContext, /, *args: Params.args, **kwargs: Params.kwargs
        ) -> Answer:
            try:
                answer = await entry(owner, context, *args, **kwargs)
            except SamoError as error:
                await owner.meter.answered(context, operation, error.type.value, Units())
                raise
            rest = getattr(answer, "rest", None)
            if rest is not None:  # an OperationStream: metered when it ends
                first = answer.first  # type: ignore[attr-defined]
                answer.rest = _MeteredRest(owner.meter, context, operation, first, rest)  # type: ignore[attr-defined]
            else:
                await owner.meter.answered(context, operation, "ok", units_of(answer))
            return answer

        return counted

    return wrap


class _MeteredRest:
    """A stream's remaining items, metered once when they run out, fail or are closed: whichever comes
    first (a transport may close the stream without ever asking for an item after the first)."""

    def __init__(
        self, meter: Meter, context: RequestContext, operation: str, first: Any, rest: AsyncIterator[Any]
    ) -> None:
        self._meter, self._context, self._operation = meter, context, operation
        self._last, self._rest = first, rest
        self._metered = False

    def __aiter__(self) -> _MeteredRest:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await anext(self._rest)
        except StopAsyncIteration:
            await self._answered(None)
            raise
        except SamoError as error:
            await self._answered(error.type.value)
            raise
        self._last = item
        return item

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._rest, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._answered(None)

    async def _answered(self, error_type: str | None) -> None:
        if self._metered:
            return
        self._metered = True
        # Its last item the result: answered, even when the consumer closes the stream right after it.
        status = "ok" if is_result(self._last) else error_type or CANCELLED
        units = units_of(self._last) if status == "ok" else Units()
        await self._meter.answered(self._context, self._operation, status, units)
