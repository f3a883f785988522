"""What a gateway process holds while it runs: the Triton client, the services over it, admission
and the model health monitor. The operations (gateway/operations) run requests over them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.admission import Admission
from gateway.audio.limits import AudioLimits
from gateway.card_check import ExpectedModel
from gateway.coalescing import CoalescingCalls, EncoderBatching
from gateway.emotions.model import EmotionModel, discover_emotion_models
from gateway.emotions.service import EmotionService
from gateway.health.monitor import ModelHealthMonitor
from gateway.health.probes import model_probes
from gateway.journal.service import JournalService
from gateway.summarization.abstractive import discover_abstractive
from gateway.summarization.service import Embedder, SummarizationService, discover_embedder
from gateway.transcription.model import discover_whisper_models
from gateway.transcription.service import TranscriptionService
from gateway.triton_router import TritonRouter
from samo.contracts.summarizer import SummarizerContract
from samo.contracts.text import INPUT_IDS
from samo.contracts.whisper import WhisperContract
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
        embedder = discover_embedder(settings.model_repository)
        # The text encoders' concurrent calls are joined (gateway/coalescing.py); the rest go straight.
        encoders = CoalescingCalls(triton, encoder_batching(models, embedder), settings.coalesce_in_flight)
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
            EmotionService(encoders, models, settings.default_emotion_model),
            TranscriptionService(
                triton, whisper, settings.default_whisper_model, limits, settings.max_windows_in_flight
            ),
            SummarizationService(
                encoders,
                embedder,
                discover_abstractive(settings.model_repository),
                settings.default_summarizer,
            ),
        )

    async def close(self) -> None:
        await self.health.stop()
        await self.triton.close()

    async def readiness(self) -> str | None:
        """None when every installed model answered its last probe (a real inference), else why not.
        (Shutdown is the operation layer's: `Operations.readiness`.)"""
        if not self.health.probes:
            return f"no models installed in {self.settings.model_repository}"
        await self.health.ensure_checked()
        return self.health.unready_reason()


def encoder_batching(
    emotions: Mapping[str, EmotionModel], embedder: Embedder | None
) -> dict[str, EncoderBatching]:
    """How each text encoder's rows are joined: up to its card's batch size, token ids padded with its
    card's pad id."""
    batching = {
        name: EncoderBatching(model.card.max_batch_size, {INPUT_IDS: model.card.pad_token_id})
        for name, model in emotions.items()
    }
    if embedder is not None:
        card = embedder.card
        batching[embedder.name] = EncoderBatching(card.max_batch_size, {INPUT_IDS: card.pad_token_id})
    return batching


def expected_models(
    emotions: EmotionService, transcription: TranscriptionService, summarization: SummarizationService
) -> dict[str, ExpectedModel]:
    """Every Triton model the services call, as their cards describe it."""
    expected = [
        ExpectedModel(name, model.card.contract.model, model.card.max_batch_size)
        for name, model in emotions.models.items()
    ]
    expected += [ExpectedModel(name, WhisperContract().model, 1) for name in transcription.models]
    embedder = summarization.embedder
    if embedder is not None:
        expected.append(
            ExpectedModel(embedder.name, embedder.card.contract.model, embedder.card.max_batch_size)
        )
    for name, model in summarization.abstractive.items():
        expected.append(ExpectedModel(name, SummarizerContract().model, 1))
        if model.card.stream_model:
            expected.append(ExpectedModel(model.card.stream_model, SummarizerContract().model, 1))
    return {model.name: model for model in expected}
