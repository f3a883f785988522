"""What an operation's result used: its model and units (texts, tokens, audio seconds). Read from the
typed results only, never from their text."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.results import EmotionResult, JournalAnalysis, SummaryResult, Transcript


@dataclass(frozen=True)
class Units:
    model: str = ""
    model_version: str = ""
    texts: int = 0
    tokens: int = 0
    """Tokens the encoders saw (emotions) plus tokens generated (abstractive summaries)."""
    generated_tokens: int = 0
    """The part of `tokens` a model generated: what the generated-tokens quota counts."""
    audio_seconds: float = 0.0


def is_result(item: object) -> bool:
    """A stream's final item (a result), rather than a segment or a text delta."""
    return isinstance(item, EmotionResult | Transcript | SummaryResult | JournalAnalysis)


def units_of(result: object) -> Units:
    """The units of a result (an OpenAI answer is read through its `transcript`); none for anything else."""
    if isinstance(result, EmotionResult):  # first: most of the load, and no attribute lookups that fail
        tokens = sum(text.tokens for text in result.results)
        return Units(result.model.name, result.model.version, len(result.results), tokens)
    if isinstance(result, Transcript):
        return Units(result.model.name, result.model.version, audio_seconds=result.duration)
    if isinstance(result, SummaryResult):
        generated = sum(summary.tokens or 0 for summary in result.results)
        return Units(result.model.name, result.model.version, len(result.results), generated, generated)
    if isinstance(result, JournalAnalysis):
        models = [
            m for m in (result.models.transcription, result.models.emotion, result.models.summarization) if m
        ]
        generated = (result.summary.tokens or 0) if result.summary else 0
        return Units(
            "+".join(m.name for m in models),
            "+".join(m.version for m in models),
            1,
            generated,
            generated,
            result.transcript.duration if result.transcript else 0.0,
        )
    transcript = getattr(result, "transcript", None)  # an OpenAI answer (gateway/operations)
    return units_of(transcript) if isinstance(transcript, Transcript) else Units()
