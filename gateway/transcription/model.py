"""Installed Whisper models as the gateway sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.repository import cards_for_task
from samo.contracts.whisper import WhisperModelCard


@dataclass(frozen=True)
class WhisperModel:
    name: str
    version: str
    card: WhisperModelCard


def discover_whisper_models(repository: Path) -> dict[str, WhisperModel]:
    models = {}
    for model_dir in cards_for_task(repository, "transcription"):
        versions = sorted((int(p.name) for p in model_dir.iterdir() if p.name.isdigit()), reverse=True)
        card = WhisperModelCard.read(model_dir)
        models[model_dir.name] = WhisperModel(model_dir.name, str(versions[0]) if versions else "1", card)
    return models
