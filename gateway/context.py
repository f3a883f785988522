"""One request's own state, handed explicitly from its transport through its operation to every
Triton call it makes: who asked, its ID, its deadline and the work units it holds.

Built by the transport (HTTP: gateway/http/context.py; gRPC: gateway/grpc_api/servicer.py), filled in
by the operation's admission (gateway/operations), read by the services and the Triton client. The
health monitor's probes run with `RequestContext.for_probe()`: no caller, no deadline of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission import Ticket
from gateway.deadlines import Deadline
from gateway.security.access import Access, Principal


@dataclass
class RequestContext:
    request_id: str | None = None
    """The request's ID (gateway/observability/request_id.py): Triton's request ID for its calls."""
    principal: Principal | None = None
    """The caller, once the transport's access check admitted it (None: no access check ran)."""
    access: Access | None = None
    """Where the caller's audio seconds are counted against its rate limit (None: not counted)."""
    ticket: Ticket | None = None
    """The work units the request holds, set by its operation's admission."""
    background: bool = False
    """A batch line: admitted only into the budget's batch share and sent to Triton at the lower priority,
    so interactive requests go first."""
    probe: bool = False
    """A health probe's call: it may reach a model being reloaded, and its failures are the monitor's
    own verdict rather than a hint to probe again."""

    @classmethod
    def for_probe(cls) -> RequestContext:
        return cls(probe=True)

    @property
    def deadline(self) -> Deadline | None:
        return self.ticket.deadline if self.ticket is not None else None

    def time_left(self, default_s: float) -> float:
        """Seconds until the deadline, or `default_s` when the request has none (probes, direct calls).
        A deadline that has passed raises DEADLINE_EXCEEDED, so no work starts that nobody waits for."""
        deadline = self.deadline
        return default_s if deadline is None else deadline.remaining()

    def hold_audio(self, seconds_past_window: float) -> None:
        """Hold the work units of audio found past the one window every upload is admitted with;
        OVERLOADED (429) when the budget cannot take them. Without a ticket, nothing to hold."""
        if self.ticket is not None and not self.ticket.released:
            self.ticket.add_audio(seconds_past_window)

    async def meter_audio(self, seconds: float) -> None:
        """Count `seconds` more of the caller's audio against its audio rate limit (`rate_limited` when
        spent); nothing without an access check or an audio limit."""
        if self.access is not None and self.principal is not None:
            await self.access.charge_audio(self.principal, seconds)

    async def meter_live_audio(self, seconds: float) -> None:
        """`meter_audio` for a live session's audio as it arrives: the caller's live audio limit first
        (`realtime_audio_rate_limit`), then as any audio."""
        if self.access is not None and self.principal is not None:
            await self.access.charge_live_audio(self.principal, seconds)
