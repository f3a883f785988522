"""The operations a load test mixes, and the `--mix` spelling of their weights (`emotions=5,transcribe=1`)."""

from __future__ import annotations

# Each operation is one call of the product, the same over HTTP and gRPC (see load_tests/locustfile.py).
OPERATIONS = {
    "emotions": "one journal entry's emotions",
    "emotions_batch": "emotions of 8 entries in one request (a back end re-analysing)",
    "summarize": "summary of one longer entry (4 to 8 sentences)",
    "journal_text": "the whole journal analysis of a written entry",
    "transcribe": "transcription of a spoken clip (3 to 11 s of real and espeak-ng speech)",
    "journal_audio": "the whole journal analysis of a spoken entry (about 12 to 13 s)",
}

# The statistics entry of each operation: (HTTP name, gRPC name); request types `POST` and `grpc`.
REQUEST_NAMES = {
    "emotions": ("/v1/emotions", "DetectEmotions"),
    "emotions_batch": ("/v1/emotions [8]", "DetectEmotions [8]"),
    "summarize": ("/v1/summarize", "Summarize"),
    "journal_text": ("/v1/journal [text]", "AnalyzeJournal [text]"),
    "transcribe": ("/v1/transcribe", "Transcribe"),
    "journal_audio": ("/v1/journal [audio]", "AnalyzeJournal [audio]"),
}
BATCH_ENTRIES = 8

# A journal app: most calls analyse written text; speech is rarer and far heavier.
DEFAULT_MIX = "emotions=8,emotions_batch=1,summarize=2,journal_text=3,transcribe=1,journal_audio=1"


def parse_mix(spec: str) -> dict[str, int]:
    """`name=weight,...` to {name: weight}; names from OPERATIONS, weights whole numbers >= 0, one > 0."""
    weights: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, sep, weight = item.partition("=")
        name = name.strip()
        if not sep or name not in OPERATIONS:
            raise ValueError(f"mix: `{item}` is not `name=weight` with a name in {', '.join(OPERATIONS)}")
        try:
            weights[name] = int(weight)
        except ValueError:
            raise ValueError(f"mix: the weight of `{name}` must be a whole number, got `{weight}`") from None
        if weights[name] < 0:
            raise ValueError(f"mix: the weight of `{name}` must be 0 or more, got {weights[name]}")
    if not any(weights.values()):
        raise ValueError("mix: give at least one operation a weight above 0")
    return {name: weight for name, weight in weights.items() if weight}
