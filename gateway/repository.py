"""The model repository as the gateway reads it: model folders found by their cards' task."""

from __future__ import annotations

import json
import logging
from pathlib import Path

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
