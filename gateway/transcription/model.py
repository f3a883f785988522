"""Installed Whisper models as the gateway sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.repository import cards_for_task
from samo.contracts.whisper import WhisperModelCard
from samo.text_encoding import latest_version


@dataclass(frozen=True)
class WhisperModel:
    name: str
    version: str
    card: WhisperModelCard


def discover_whisper_models(repository: Path) -> dict[str, WhisperModel]:
    models = {}
    for model_dir in cards_for_task(repository, "transcription"):
        models[model_dir.name] = WhisperModel(
            model_dir.name, latest_version(model_dir), WhisperModelCard.read(model_dir)
        )
    return models
