"""Admission by cost: each request declares its work in units and holds them until its response ends.

A unit is one text through an encoder (an emotion text, a sentence batch for the extractive summary).
A summary costs `units_per_token` per token it may generate per beam; audio `units_per_audio_s` per
second. Work in progress never passes the budget: a request that would pass it is refused at once with
OVERLOADED (429 / RESOURCE_EXHAUSTED, Retry-After) rather than queued, so overload is answered in
microseconds and nothing heavy (reading an upload, tokenizing, Triton) starts for it. A request larger
than the whole budget is charged the whole budget: it runs, alone.

Audio's duration is known only once the file is opened, after admission: an upload is admitted at one
Whisper window (30 s, the least any transcription costs, since Whisper pads every window to 30 s), and
topped up to its duration when that is read (`RequestContext.hold_audio`, which calls
`Ticket.add_audio`); a top-up over the budget is refused like an admission.

Admission also starts the request's deadline (`gateway.deadlines`): `triton_timeout_s` plus
`deadline_s_per_unit` per unit, extended by top-ups. What each operation costs is the operation
layer's knowledge (gateway/operations/costs.py); this module only counts units.

Streams (server-sent events, gRPC server streams) keep their ticket until they end, are cancelled or
fail: `Ticket.hand_over` passes the units from the route to the stream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from types import TracebackType

from gateway.deadlines import Deadline
from gateway.errors import ErrorType, SamoError
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

WHISPER_WINDOW_S = 30.0
"""The least audio any transcription costs: Whisper pads every window to 30 s."""


@dataclass(frozen=True)
class WorkCosts:
    """What requests cost in work units, and the deadline that follows from it."""

    units_per_token: float = 2.0
    units_per_audio_s: float = 16.0
    base_deadline_s: float = 30.0
    deadline_s_per_unit: float = 0.01

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> WorkCosts:
        return cls(
            units_per_token=settings.units_per_token,
            units_per_audio_s=settings.units_per_audio_s,
            base_deadline_s=settings.triton_timeout_s,
            deadline_s_per_unit=settings.deadline_s_per_unit,
        )

    def texts(self, count: int) -> int:
        return max(1, count)

    def tokens(self, count: int) -> int:
        return max(1, math.ceil(count * self.units_per_token))

    def audio(self, duration_s: float) -> int:
        """Audio to transcribe: at least one window."""
        return max(1, math.ceil(max(duration_s, WHISPER_WINDOW_S) * self.units_per_audio_s))

    def audio_beyond_window(self, duration_s: float) -> int:
        """What `duration_s` of audio costs past the one window every upload is admitted with."""
        return self.audio(duration_s) - self.audio(0)

    def deadline_s(self, units: int) -> float:
        return self.base_deadline_s + units * self.deadline_s_per_unit


class Admission:
    """Units in progress against a budget, for one gateway process (HTTP and gRPC share it)."""

    def __init__(self, budget: int, costs: WorkCosts = WorkCosts()) -> None:
        if budget < 1:
            raise ValueError(f"`budget` must be at least 1 unit, got {budget}")
        self.budget = budget
        self.costs = costs
        self.in_use = 0

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> Admission:
        return cls(settings.admission_budget, WorkCosts.from_settings(settings))

    def admit(self, cost: int, *, share: float = 1.0) -> Ticket:
        """A ticket holding `cost` units (at most the budget), or OVERLOADED when they do not fit now.
        `share` < 1 (batch lines): admitted only while everything in progress, this included, stays
        within that share of the budget, so the rest stays free for interactive requests."""
        charge = self._reserve(0, cost, share)
        return Ticket(self, charge, cost, Deadline(self.costs.deadline_s(cost)))

    def _reserve(self, held: int, cost: int, share: float = 1.0) -> int:
        """Raise a holding of `held` units to `cost` (capped at the budget); the new holding."""
        if cost < 1:
            raise ValueError(f"a request costs at least 1 unit, got {cost}")
        charge = min(cost, self.budget)
        limit = self.budget if share >= 1.0 else max(charge, math.floor(self.budget * share))
        if self.in_use - held + charge > limit:
            raise SamoError(
                ErrorType.OVERLOADED,
                f"the gateway is at its work budget ({self.in_use} of {limit} units in progress; "
                f"this request needs {charge}); retry shortly",
            )
        self.in_use += charge - held
        return charge

    def _release(self, units: int) -> None:
        self.in_use -= units


class Ticket:
    """Units held by one request, and its deadline. As a context manager: the units are released on
    exit, however the block ends (errors and cancellation included)."""

    def __init__(self, admission: Admission, units: int, cost: int, deadline: Deadline) -> None:
        self._admission = admission
        self.units = units
        """Units held: the cost, or the whole budget for a request larger than it."""
        self._cost = cost
        self.deadline = deadline
        self._released = False

    @property
    def released(self) -> bool:
        return self._released

    @property
    def cost(self) -> int:
        """The units asked for so far (`units` is at most the budget)."""
        return self._cost

    def add(self, units: int) -> None:
        """Hold `units` more (work found after admission); OVERLOADED when they do not fit, the units
        held so far staying held. The deadline grows to match."""
        if self._released:
            raise RuntimeError("units added to a released ticket")
        if units <= 0:
            return
        self._cost += units
        self.units = self._admission._reserve(self.units, self._cost)
        self.deadline.extend_to(self._admission.costs.deadline_s(self._cost))

    def add_audio(self, duration_s: float) -> None:
        """Hold units for `duration_s` of audio past the window the request was admitted with."""
        self.add(self._admission.costs.audio_beyond_window(duration_s))

    def release(self) -> None:
        """Give the units back; later calls do nothing."""
        if not self._released:
            self._released = True
            self._admission._release(self.units)

    def hand_over(self) -> Ticket:
        """A ticket that takes over these units and deadline (for a stream that outlives the route);
        this one then releases nothing."""
        if self._released:
            raise RuntimeError("hand-over of a released ticket")
        successor = Ticket(self._admission, self.units, self._cost, self.deadline)
        self._released = True
        return successor

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()
