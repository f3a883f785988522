"""Which models serve: a real inference on each model every few seconds, and a reload of any that fails.

A Python-backend stub that dies is not restarted by Triton, and the model keeps reporting READY
while every request fails with `Stub process ... is not healthy` (measured). So health is a real
inference per model, and a model that fails one while Triton itself answers is reloaded through
Triton's model repository API (explicit model control): unloaded and loaded, which starts new stubs.
While a model reloads, calls to it are refused with UNAVAILABLE (503, Retry-After) before they
reach Triton; the other models keep serving. A request that fails with a server-side error wakes the
monitor at once (one that met a dead stub skips the probe and reloads), so a dead stub is found by
the first request it fails, not the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from enum import StrEnum

from pydantic import BaseModel

from gateway.errors import ErrorType, SamoError
from gateway.health.probes import ModelProbe
from gateway.triton_client import ModelStopped, TritonClient

logger = logging.getLogger(__name__)

# Set while a probe runs: its Triton calls pass the reload gate and do not wake the monitor again.
_probing: ContextVar[bool] = ContextVar("samo_health_probe", default=False)

# Failures that say the model (or the server) is at fault, not the request: worth probing at once.
_SUSPICIOUS = frozenset({ErrorType.INTERNAL, ErrorType.UNAVAILABLE, ErrorType.NOT_FOUND})


class ModelStatus(StrEnum):
    STARTING = "starting"
    """Not probed yet."""
    SERVING = "serving"
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


class ModelsHealth(BaseModel, frozen=True):
    ready: bool
    models: tuple[ModelHealth, ...]


class ModelHealthMonitor:
    """Probes every model on a schedule (one task per gateway process) and reloads failing ones."""

    def __init__(
        self,
        triton: TritonClient,
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
        self._timeouts: dict[str, int] = dict.fromkeys(self.probes, 0)
        self._failed_at: dict[str, float] = {}
        self._suspects: set[str] = set()
        self._stopped: dict[str, SamoError] = {}
        self._wake = asyncio.Event()
        self._checked = asyncio.Event()
        self._round_lock = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._version = 0
        self._task: asyncio.Task[None] | None = None

    # -- the gate the Triton client consults (gateway.triton_client.ModelGate) --

    def admit(self, model: str) -> int:
        """Refuse calls to a model being reloaded; else the model's reload count, so that a call that
        began before a reload and failed after it does not trigger another."""
        state = self._states.get(model)
        if state is None:
            return 0
        if state.status is ModelStatus.RELOADING and not _probing.get():
            raise SamoError(
                ErrorType.UNAVAILABLE, f"model `{model}` is being reloaded after a failure; retry shortly"
            )
        return state.reloads

    def failed(self, model: str, error: SamoError, admitted: int) -> None:
        state = self._states.get(model)
        if state is None or _probing.get() or error.type not in _SUSPICIOUS or admitted != state.reloads:
            return
        if state.status in (ModelStatus.FAILING, ModelStatus.RELOADING):
            return  # already known: the reload under way (or the next round) deals with it
        self._suspects.add(model)
        if isinstance(error, ModelStopped):
            self._stopped[model] = error  # no probe needed to know: reload at once
        self._wake.set()

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
            self._suspects.clear()

    async def ensure_checked(self) -> None:
        """Every model probed at least once (the first round, or one run now when no task runs)."""
        if self._checked.is_set():
            return
        if self._task is None:
            await self.check()
        else:
            await self._checked.wait()

    async def check(self, models: Sequence[str] | None = None) -> None:
        """Probe `models` (all by default) and reload the ones that fail while Triton answers."""
        async with self._round_lock:
            names = list(models) if models is not None else list(self.probes)
            stopped, self._stopped = self._stopped, {}
            errors = await asyncio.gather(
                *(self._known(stopped[name]) if name in stopped else self._probe(name) for name in names)
            )
            failed = {name: error for name, error in zip(names, errors, strict=True) if error is not None}
            for name in names:
                error = failed.get(name)
                if error is None:
                    await self._set(name, ModelStatus.SERVING, None)
                else:
                    self._failed_at.setdefault(name, time.monotonic())
                    await self._set(name, ModelStatus.FAILING, error.message)
            self._checked.set()
            to_reload = [name for name, error in failed.items() if self._needs_reload(name, error)]
            if to_reload and await self.triton.is_server_live():
                await asyncio.gather(*(self._reload(name) for name in to_reload))

    def _needs_reload(self, name: str, error: SamoError) -> bool:
        if error.type is ErrorType.OVERLOADED:
            return False  # busy, not broken
        if error.type is ErrorType.DEADLINE_EXCEEDED:
            # A probe stuck behind real work times out too: reload only a model that hangs twice running.
            return self._timeouts[name] >= 2
        return True

    @staticmethod
    async def _known(error: SamoError) -> SamoError:
        return error

    async def _probe(self, name: str) -> SamoError | None:
        token = _probing.set(True)
        try:
            await asyncio.wait_for(self.probes[name].run(), self.timeout_s)
        except TimeoutError:
            self._timeouts[name] += 1
            return SamoError(ErrorType.DEADLINE_EXCEEDED, f"model `{name}` did not answer in time")
        except SamoError as exc:
            self._timeouts[name] = 0
            return exc
        finally:
            _probing.reset(token)
        self._timeouts[name] = 0
        return None

    async def _reload(self, name: str) -> None:
        reason = self._states[name].reason
        logger.warning("model %s failed its probe (%s); reloading it in Triton", name, reason)
        await self._set(name, ModelStatus.RELOADING, reason)
        try:
            await self.triton.reload_model(name)
        except SamoError as exc:
            logger.error("reloading model %s failed: %s", name, exc.message)
            await self._set(name, ModelStatus.FAILING, f"reload failed: {exc.message}")
            return
        error = await self._probe(name)
        if error is not None:
            await self._set(name, ModelStatus.FAILING, error.message)
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
        if status is ModelStatus.SERVING:
            # Failures reported before now are of the instance that just answered or was replaced.
            self._failed_at.pop(name, None)
            self._stopped.pop(name, None)
            self._suspects.discard(name)
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
        """None when every model serves, else which do not and why."""
        failing = [state for state in self._states.values() if state.status is not ModelStatus.SERVING]
        if not failing:
            return None
        reasons = {state.reason for state in failing}
        if len(failing) == len(self._states) and len(reasons) == 1 and None not in reasons:
            return reasons.pop()  # one cause for all, e.g. the inference server is unreachable
        return "models not serving: " + "; ".join(
            f"{state.model} ({state.status.value}{f': {state.reason}' if state.reason else ''})"
            for state in failing
        )
