"""What a gateway process holds while it runs: the Triton client and the services over it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gateway.audio.limits import AudioLimits
from gateway.emotions.model import discover_emotion_models
from gateway.emotions.service import EmotionService
from gateway.errors import ErrorType, SamoError
from gateway.journal.service import JournalService
from gateway.results import SummaryOptions
from gateway.summarization.abstractive import discover_abstractive
from gateway.summarization.service import SummarizationService, discover_embedder
from gateway.transcription.model import discover_whisper_models
from gateway.transcription.service import TranscriptionService
from gateway.triton_client import TritonClient
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)

READINESS_TEXT = "Readiness check."


@dataclass
class Services:
    settings: GatewaySettings
    triton: TritonClient
    emotions: EmotionService
    transcription: TranscriptionService
    summarization: SummarizationService
    journal: JournalService = field(init=False)
    inflight: int = 0
    _ready_until: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.journal = JournalService(self.emotions, self.summarization, self.transcription)

    @classmethod
    def open(cls, settings: GatewaySettings) -> Services:
        triton = TritonClient(settings.triton_grpc_url, settings.triton_timeout_s)
        models = discover_emotion_models(settings.model_repository)
        whisper = discover_whisper_models(settings.model_repository)
        logger.info(
            "emotion models: %s; transcription models: %s",
            ", ".join(models) or "none",
            ", ".join(whisper) or "none",
        )
        limits = AudioLimits(max_bytes=settings.max_audio_bytes, max_duration_s=settings.max_audio_duration_s)
        return cls(
            settings,
            triton,
            EmotionService(triton, models, settings.default_emotion_model),
            TranscriptionService(triton, whisper, settings.default_whisper_model, limits),
            SummarizationService(
                triton,
                discover_embedder(settings.model_repository),
                discover_abstractive(settings.model_repository),
                settings.default_summarizer,
            ),
        )

    async def close(self) -> None:
        await self.triton.close()

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Count a request in, or refuse it when too many are already waiting on Triton."""
        if self.inflight >= self.settings.max_inflight_requests:
            raise SamoError(ErrorType.OVERLOADED, "too many requests in progress; retry shortly")
        self.inflight += 1
        try:
            yield
        finally:
            self.inflight -= 1

    async def readiness(self) -> str | None:
        """None when a real inference through Triton just succeeded, else why not."""
        if time.monotonic() < self._ready_until:
            return None
        try:
            if self.emotions.models:
                await self.emotions.detect([READINESS_TEXT])
            elif self.transcription.models:
                await self.transcription.probe()
            elif self.summarization.models:
                await self.summarization.summarize([READINESS_TEXT], SummaryOptions(max_new_tokens=1))
            else:
                return f"no models installed in {self.settings.model_repository}"
        except SamoError as exc:
            return exc.message
        self._ready_until = time.monotonic() + self.settings.ready_cache_s
        return None
