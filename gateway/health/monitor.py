"""Which models serve: a real inference on each model every few seconds, and a reload of a broken one.

A Python-backend stub that dies is not restarted by Triton, and the model keeps reporting READY
while every request fails with `Stub process ... is not healthy` (measured). So health is a real
inference per model. A model is reloaded through Triton's model repository API (explicit model
control: unload and load, which starts new stubs) only when it is broken: its stub died, or Triton's
repository index says it is not loaded (and nobody is loading it). A probe that is merely slow
(timeout) or turned away by a full queue marks the model `slow`, which still counts as ready: on 2
busy cores a probe can wait many seconds behind real work, and reloading a busy model would turn
slowness into an outage. While a model reloads, calls to it are refused with UNAVAILABLE (503,
Retry-After) before they reach Triton; the other models keep serving. A request that fails with a
server-side error wakes the monitor at once (one that met a dead stub skips the probe and reloads),
so a dead stub is found by the first request it fails, not the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.health.probes import ModelProbe
from gateway.triton_client import (
    MODEL_IN_TRANSITION,
    MODEL_READY,
    ModelRefused,
    ModelStopped,
)
from gateway.triton_router import TritonRouter

logger = logging.getLogger(__name__)

# Failures that say the model (or the server) is at fault, not the request: worth probing at once.
_SUSPICIOUS = frozenset({ErrorType.INTERNAL, ErrorType.UNAVAILABLE, ErrorType.NOT_FOUND})
# Failures of a model that is busy, not broken: never a reason to reload it.
_BUSY = frozenset({ErrorType.DEADLINE_EXCEEDED, ErrorType.OVERLOADED})


class ModelStatus(StrEnum):
    STARTING = "starting"
    """Not probed yet."""
    SERVING = "serving"
    SLOW = "slow"
    """Loaded in Triton, but its probe timed out or met a full queue: still ready, never reloaded."""
    FAILING = "failing"
    RELOADING = "reloading"
    """Being reloaded in Triton; calls are refused with 503 until it answers a probe again."""


class ModelHealth(BaseModel, frozen=True):
    model: str
    task: str
    status: ModelStatus
    reason: str | None = None
    """Why it is not serving: the probe's error, as requests would see it."""
    checked_at: float | None = None
    """When it was last probed, Unix time, seconds."""
    reloads: int = 0
    """Successful reloads since the gateway started."""

    @property
    def serves(self) -> bool:
        """Whether it takes requests (counts as ready): serving, or alive but slow."""
        return self.status in (ModelStatus.SERVING, ModelStatus.SLOW)


@dataclass(frozen=True)
class _Verdict:
    """What one probe result means for a model: its status, why, and whether to reload it."""

    status: ModelStatus
    reason: str | None = None
    reload: bool = False


class ModelsHealth(BaseModel, frozen=True):
    ready: bool
    models: tuple[ModelHealth, ...]


class ModelHealthMonitor:
    """Probes every model on a schedule (one task per gateway process) and reloads failing ones."""

    def __init__(
        self,
        triton: TritonRouter,
        probes: Sequence[ModelProbe],
        *,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self.triton = triton
        self.probes = {probe.model: probe for probe in probes}
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._states = {
            probe.model: ModelHealth(model=probe.model, task=probe.task, status=ModelStatus.STARTING)
            for probe in probes
        }
        self._failed_at: dict[str, float] = {}
        # Completed reloads (unload and load) per model: a call admitted before the last one that fails
        # after it met the old instance, and says nothing about the new one.
        self._generation: dict[str, int] = dict.fromkeys(self.probes, 0)
        # Models that failed a request, and when (monotonic): probed at once, and cleared only by a
        # probe that started after the failure.
        self._suspects: dict[str, float] = {}
        self._stopped: dict[str, SamoError] = {}
        # When each model last answered a request (monotonic): a model that answered since the last
        # round started needs no probe of its own this round.
        self._answered_at: dict[str, float] = {}
        self._round_started = -math.inf
        self._wake = asyncio.Event()
        self._checked = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._version = 0
        self._task: asyncio.Task[None] | None = None

    # -- the gate the Triton client consults (gateway.triton_client.ModelGate) --

    def admit(self, model: str, *, probe: bool) -> int:
        """Refuse calls to a model being reloaded; else the model's reload generation, so that a call
        that began before a reload and failed after it does not trigger another."""
        state = self._states.get(model)
        if state is None:
            return 0
        if state.status is ModelStatus.RELOADING and not probe:
            raise SamoError(
                ErrorType.UNAVAILABLE, f"model `{model}` is being reloaded after a failure; retry shortly"
            )
        return self._generation[model]

    def failed(self, model: str, error: SamoError, admitted: int, *, probe: bool) -> None:
        state = self._states.get(model)
        if state is None or probe or error.type not in _SUSPICIOUS:
            return
        if admitted != self._generation[model]:
            return  # it met the instance the last reload replaced
        if state.status in (ModelStatus.FAILING, ModelStatus.RELOADING):
            return  # already known: the reload under way (or the next round) deals with it
        self._suspects[model] = time.monotonic()
        if isinstance(error, ModelStopped):
            self._stopped[model] = error  # no probe needed to know: reload at once
        self._wake.set()

    def answered(self, model: str, admitted: int, *, probe: bool) -> None:
        if probe or model not in self._states or admitted != self._generation[model]:
            return  # the probe's own answer is judged by the round; an old instance's says nothing
        self._answered_at[model] = time.monotonic()

    # -- running --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="samo-model-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        suspects: list[str] | None = None  # None: every model
        while True:
            try:
                await self.check(suspects)
            except Exception:  # the monitor must outlive any one bad round
                logger.exception("model health round failed")
            woken = False
            with contextlib.suppress(TimeoutError):
                woken = await asyncio.wait_for(self._wake.wait(), self.interval_s)
            self._wake.clear()
            # Woken by failed requests: probe those models now; the full round keeps its schedule.
            suspects = sorted(self._suspects) if woken and self._suspects else None

    async def ensure_checked(self) -> None:
        """Every model probed at least once (the first round, or one run now when no task runs)."""
        if self._checked.is_set():
            return
        if self._task is None:
            await self.check()
        else:
            await self._checked.wait()

    async def check(self, models: Sequence[str] | None = None) -> None:
        """Probe `models` (all by default) and reload the broken ones (see `_judge`)."""
        async with self._round_lock:
            started = time.monotonic()
            proven = self._proven(started) if models is None else []
            for name in proven:
                await self._set(name, ModelStatus.SERVING, None)
            names = [name for name in (models if models is not None else self.probes) if name not in proven]
            stopped = {name: self._stopped.pop(name) for name in names if name in self._stopped}
            for name in names:
                if self._suspects.get(name, started) < started:
                    del self._suspects[name]  # this round's probe answers for it
            errors = await asyncio.gather(
                *(self._known(stopped[name]) if name in stopped else self._probe(name) for name in names)
            )
            verdicts = await asyncio.gather(
                *(self._judge(name, error) for name, error in zip(names, errors, strict=True))
            )
            for name, verdict in zip(names, verdicts, strict=True):
                if verdict.status is ModelStatus.FAILING:
                    self._failed_at.setdefault(name, started)
                await self._set(name, verdict.status, verdict.reason)
            self._checked.set()
            to_reload = [name for name, verdict in zip(names, verdicts, strict=True) if verdict.reload]
            await asyncio.gather(*(self._reload(name) for name in to_reload))

    def _proven(self, started: float) -> list[str]:
        """The models a scheduled round need not probe: serving (or slow) ones that answered a request
        since the last scheduled round started, and are not suspects. A probe beside requests costs an
        inference, and meeting them in Triton's batcher is what stalled them ~500 ms
        (docs/operations/health.md); a request answered proves as much as a probe."""
        since, self._round_started = self._round_started, started
        return [
            name
            for name in self.probes
            if self._answered_at.get(name, -math.inf) >= since
            and name not in self._suspects
            and self._states[name].status in (ModelStatus.SERVING, ModelStatus.SLOW)
        ]

    async def _judge(self, name: str, error: SamoError | None) -> _Verdict:
        """A probe's result: serving; slow (alive in Triton but busy); failing; or broken, to reload.

        Reloads only what a reload can fix: a dead stub, or a model Triton has not loaded (unloaded or
        failed to load). Not a model that Triton is loading or unloading right now (another gateway
        process reloading it), nor one that Triton holds ready and that failed otherwise."""
        if error is None:
            return _Verdict(ModelStatus.SERVING)
        if isinstance(error, ModelRefused):
            return _Verdict(ModelStatus.FAILING, error.message, reload=True)  # the router checks it again
        state = await self.triton.model_state(name)
        if state is None:
            return _Verdict(ModelStatus.FAILING, error.message)  # Triton unreachable: nothing to reload
        if error.type in _BUSY and state == MODEL_READY:
            return _Verdict(ModelStatus.SLOW, error.message)
        if state in MODEL_IN_TRANSITION:
            return _Verdict(ModelStatus.FAILING, f"{error.message} (Triton is {state.lower()} it)")
        if state == MODEL_READY:
            return _Verdict(ModelStatus.FAILING, error.message, reload=isinstance(error, ModelStopped))
        return _Verdict(ModelStatus.FAILING, error.message, reload=True)  # not loaded: load it

    @staticmethod
    async def _known(error: SamoError) -> SamoError:
        return error

    async def _probe(self, name: str) -> SamoError | None:
        try:
            await asyncio.wait_for(self.probes[name].run(RequestContext.for_probe()), self.timeout_s)
        except TimeoutError:
            return SamoError(
                ErrorType.DEADLINE_EXCEEDED,
                f"model `{name}` did not answer its probe within {self.timeout_s:g} s",
            )
        except SamoError as exc:
            return exc
        return None

    async def _reload(self, name: str) -> None:
        reason = self._states[name].reason
        logger.warning("model %s is broken (%s); reloading it in Triton", name, reason)
        await self._set(name, ModelStatus.RELOADING, reason)
        try:
            await self.triton.reload_model(name)
        except SamoError as exc:
            logger.error("reloading model %s failed: %s", name, exc.message)
            await self._set(name, ModelStatus.FAILING, f"reload failed: {exc.message}")
            return
        self._generation[name] += 1
        # Failures reported until now, even during this round, met the instance just replaced.
        self._stopped.pop(name, None)
        self._suspects.pop(name, None)
        error = await self._probe(name)
        if error is not None:
            # Judged, not reloaded again now: the next round probes it (a reload loop helps nobody).
            verdict = await self._judge(name, error)
            await self._set(name, verdict.status, verdict.reason)
            return
        down_s = time.monotonic() - self._failed_at.get(name, time.monotonic())
        await self._set(name, ModelStatus.SERVING, None, reloaded=True)
        logger.warning("model %s reloaded; serving again %.1f s after its failure was seen", name, down_s)

    async def _set(
        self, name: str, status: ModelStatus, reason: str | None, *, reloaded: bool = False
    ) -> None:
        previous = self._states[name]
        self._states[name] = previous.model_copy(
            update={
                "status": status,
                "reason": reason,
                "checked_at": time.time(),
                "reloads": previous.reloads + reloaded,
            }
        )
        if self._states[name].serves:
            self._failed_at.pop(name, None)
        if status is not previous.status or reason != previous.reason:
            if status is not ModelStatus.SERVING:
                logger.warning("model %s: %s (%s)", name, status.value, reason)
            elif previous.status is not ModelStatus.STARTING:
                logger.info("model %s: serving", name)
            async with self._changed:
                self._version += 1
                self._changed.notify_all()

    # -- reading --

    async def wait_for_change(self, seen: int) -> int:
        """The state version once it differs from `seen` (to follow changes, e.g. grpc.health.v1)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._version != seen)
            return self._version

    def report(self) -> ModelsHealth:
        models = tuple(self._states.values())
        return ModelsHealth(ready=bool(models) and self.unready_reason() is None, models=models)

    def unready_reason(self) -> str | None:
        """None when every model serves (slow ones included), else which do not and why."""
        failing = [state for state in self._states.values() if not state.serves]
        if not failing:
            return None
        reasons = {state.reason for state in failing}
        if len(failing) == len(self._states) and len(reasons) == 1 and None not in reasons:
            return reasons.pop()  # one cause for all, e.g. the inference server is unreachable
        return "models not serving: " + "; ".join(
            f"{state.model} ({state.status.value}{f': {state.reason}' if state.reason else ''})"
            for state in failing
        )
