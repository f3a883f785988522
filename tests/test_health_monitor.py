"""The health monitor's schedule, without Triton: a model that answered requests since the last scheduled
round is not probed again (a probe beside requests met them in Triton's batcher and stalled them), a
model without traffic is, and suspects always are."""

from __future__ import annotations

import asyncio
from typing import cast

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError
from gateway.health.monitor import ModelHealthMonitor, ModelStatus
from gateway.health.probes import ModelProbe
from gateway.triton_router import TritonRouter


def _monitor(probed: dict[str, int]) -> ModelHealthMonitor:
    def probe(model: str) -> ModelProbe:
        async def run(context: RequestContext) -> None:
            assert context.probe
            probed[model] += 1

        return ModelProbe(model, "emotion", run)

    # Triton itself is asked only about models whose probe failed: none here.
    triton = cast(TritonRouter, object())
    return ModelHealthMonitor(triton, [probe(name) for name in probed], interval_s=3600, timeout_s=5)


def _answer(monitor: ModelHealthMonitor, model: str, *, probe: bool = False) -> None:
    monitor.answered(model, monitor.admit(model, probe=probe), probe=probe)


def test_a_model_that_answered_requests_is_not_probed_until_it_stops() -> None:
    async def scenario() -> None:
        probed = {"busy": 0, "idle": 0}
        monitor = _monitor(probed)
        await monitor.check()
        assert probed == {"busy": 1, "idle": 1}  # the first round probes every model

        _answer(monitor, "busy")
        before = {state.model: state.checked_at for state in monitor.report().models}
        await monitor.check()
        assert probed == {"busy": 1, "idle": 2}
        states = {state.model: state for state in monitor.report().models}
        assert states["busy"].status is ModelStatus.SERVING
        assert states["busy"].checked_at >= before["busy"]  # proven by its answer, this round

        await monitor.check()  # nothing answered since the last round started: probed again
        assert probed == {"busy": 2, "idle": 3}

        _answer(monitor, "busy", probe=True)  # a probe's own answer proves nothing beyond its round
        await monitor.check()
        assert probed == {"busy": 3, "idle": 4}

    asyncio.run(scenario())


def test_a_suspect_is_probed_even_after_answering() -> None:
    async def scenario() -> None:
        probed = {"emotion": 0}
        monitor = _monitor(probed)
        await monitor.check()
        _answer(monitor, "emotion")
        admitted = monitor.admit("emotion", probe=False)
        monitor.failed("emotion", SamoError(ErrorType.UNAVAILABLE, "stub gone"), admitted, probe=False)
        await monitor.check()  # a scheduled round: the failure outweighs the answer before it
        assert probed == {"emotion": 2}

    asyncio.run(scenario())
