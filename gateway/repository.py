"""The model repository as the gateway reads it: model folders found by their cards' task."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from gateway.errors import not_found
from samo.contracts.cards import CARD_FILE

logger = logging.getLogger(__name__)


def cards_for_task(repository: Path, task: str) -> list[Path]:
    """Model folders whose card (`samo.json`) declares `task`."""
    if not repository.is_dir():
        return []
    found = []
    for card in sorted(repository.glob(f"*/{CARD_FILE}")):
        try:
            if json.loads(card.read_text()).get("task") == task:
                found.append(card.parent)
        except (OSError, json.JSONDecodeError) as exc:
            logger.error("unreadable model card %s: %s", card, exc)
    return found


Model = TypeVar("Model")


def pick_model(models: Mapping[str, Model], name: str, kind: str) -> Model:
    """The named installed model, or NOT_FOUND listing what is installed."""
    try:
        return models[name]
    except KeyError:
        known = ", ".join(sorted(models)) or "none installed"
        raise not_found(f"unknown {kind} model `{name}`; available: {known}") from None
