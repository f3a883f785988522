"""One real inference per Triton model, through the same services that serve requests.

A probe runs with a probe's context (`RequestContext.for_probe()`): its Triton calls pass the reload
gate and do not wake the monitor again."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from gateway.context import RequestContext
from gateway.emotions.service import EmotionService
from gateway.results import EmotionOptions, SummaryOptions
from gateway.summarization.service import SummarizationService
from gateway.transcription.service import TranscriptionService

_probe_numbers = itertools.count(1)


def probe_text() -> str:
    """A text no earlier probe sent: a model served with Triton's response cache would answer a repeated
    probe from the cache, and a dead stub would look healthy."""
    return f"Readiness check {next(_probe_numbers)}. The model answers."


@dataclass(frozen=True)
class ModelProbe:
    model: str
    """The model's name in Triton."""
    task: str
    run: Callable[[RequestContext], Awaitable[object]]


def model_probes(
    emotions: EmotionService, transcription: TranscriptionService, summarization: SummarizationService
) -> list[ModelProbe]:
    """A probe for every model the gateway calls, the streaming variants of summarizers included."""
    probes = [
        ModelProbe(
            name,
            "emotion",
            lambda c, name=name: emotions.detect(c, [probe_text()], EmotionOptions(model=name)),
        )
        for name in sorted(emotions.models)
    ]
    probes += [
        ModelProbe(name, "transcription", lambda c, name=name: transcription.probe(c, name))
        for name in sorted(transcription.models)
    ]
    embedder = summarization.embedder
    if embedder is not None:
        probes.append(
            ModelProbe(embedder.name, "embedding", lambda c: summarization.embed(c, embedder, [probe_text()]))
        )
    for name, model in sorted(summarization.abstractive.items()):
        one_token = SummaryOptions(model=name, max_new_tokens=1, min_new_tokens=1, num_beams=1)
        probes.append(
            ModelProbe(
                name, "summarization", lambda c, o=one_token: summarization.summarize(c, [probe_text()], o)
            )
        )
        if model.card.stream_model:
            probes.append(
                ModelProbe(
                    model.card.stream_model,
                    "summarization",
                    lambda c, o=one_token: _drain(summarization.stream(c, probe_text(), o)),
                )
            )
    return probes


async def _drain(stream: AsyncIterator[object]) -> None:
    async for _ in stream:
        pass
