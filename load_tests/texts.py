"""Journal-like request texts for load tests (light: no model libraries imported)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import exporters.emotion

PHRASES_FILE = Path(exporters.emotion.__file__).with_name("prototypes.json")


def journal_texts(count: int = 256, seed: int = 0) -> list[str]:
    """Entries of one to three first-person sentences (about 10 to 45 tokens)."""
    by_label = json.loads(PHRASES_FILE.read_text())
    phrases = [p for texts in by_label.values() for p in texts[1:]]  # [0] is the label's description
    rng = random.Random(seed)
    return [" ".join(rng.sample(phrases, rng.choice((1, 2, 3)))) for _ in range(count)]
