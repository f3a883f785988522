"""What a gateway process holds while it runs: the Triton client and the services over it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from gateway.admission import Admission, Ticket
from gateway.audio.limits import AudioLimits
from gateway.card_check import expected_models
from gateway.emotions.model import discover_emotion_models
from gateway.emotions.service import EmotionService
from gateway.errors import ErrorType, SamoError
from gateway.health.monitor import ModelHealthMonitor
from gateway.health.probes import model_probes
from gateway.journal.service import JournalService
from gateway.summarization.abstractive import discover_abstractive
from gateway.summarization.service import SummarizationService, discover_embedder
from gateway.transcription.model import discover_whisper_models
from gateway.transcription.service import TranscriptionService
from gateway.triton_router import TritonRouter
from samo.settings import GatewaySettings

logger = logging.getLogger(__name__)


@dataclass
class Services:
    settings: GatewaySettings
    triton: TritonRouter
    emotions: EmotionService
    transcription: TranscriptionService
    summarization: SummarizationService
    journal: JournalService = field(init=False)
    admission: Admission = field(init=False)
    health: ModelHealthMonitor = field(init=False)
    draining: bool = False
    """Set on SIGTERM (gateway/shutdown.py): not ready, new requests refused, running ones finish."""

    def __post_init__(self) -> None:
        self.journal = JournalService(self.emotions, self.summarization, self.transcription)
        self.admission = Admission.from_settings(self.settings)
        self.health = ModelHealthMonitor(
            self.triton,
            model_probes(self.emotions, self.transcription, self.summarization),
            interval_s=self.settings.health_probe_interval_s,
            timeout_s=self.settings.health_probe_timeout_s,
        )
        self.triton.gate = self.health
        self.triton.expect(expected_models(self.emotions, self.transcription, self.summarization))

    @classmethod
    def open(cls, settings: GatewaySettings) -> Services:
        triton = TritonRouter.from_settings(settings)
        models = discover_emotion_models(settings.model_repository)
        whisper = discover_whisper_models(settings.model_repository)
        logger.info(
            "emotion models: %s; transcription models: %s",
            ", ".join(models) or "none",
            ", ".join(whisper) or "none",
        )
        limits = AudioLimits(
            max_bytes=settings.max_audio_bytes,
            max_duration_s=settings.max_audio_duration_s,
            max_decode_samples=settings.max_audio_decode_samples,
        )
        return cls(
            settings,
            triton,
            EmotionService(triton, models, settings.default_emotion_model),
            TranscriptionService(
                triton, whisper, settings.default_whisper_model, limits, settings.max_windows_in_flight
            ),
            SummarizationService(
                triton,
                discover_embedder(settings.model_repository),
                discover_abstractive(settings.model_repository),
                settings.default_summarizer,
            ),
        )

    async def close(self) -> None:
        await self.health.stop()
        await self.triton.close()

    def admitted(self, cost: int = 1) -> Ticket:
        """`cost` work units admitted (a context manager holding them), or OVERLOADED (429) at once;
        see gateway/admission.py for what requests cost."""
        if self.draining:
            raise SamoError(ErrorType.UNAVAILABLE, "the gateway is shutting down; retry on another replica")
        return self.admission.admit(cost)

    async def readiness(self) -> str | None:
        """None when every installed model answered its last probe (a real inference), else why not."""
        if self.draining:
            return "the gateway is shutting down"
        if not self.health.probes:
            return f"no models installed in {self.settings.model_repository}"
        await self.health.ensure_checked()
        return self.health.unready_reason()
