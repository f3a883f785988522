"""What each operation costs in work units (gateway/admission.py counts them; this knows the operations)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.admission import WHISPER_WINDOW_S, WorkCosts
from gateway.results import SummaryOptions
from gateway.summarization.sentences import split_sentences
from gateway.summarization.service import SummarizationService


@dataclass(frozen=True)
class OperationCosts:
    work: WorkCosts
    summarization: SummarizationService

    def texts(self, count: int) -> int:
        """Texts through an encoder (emotions): one unit each."""
        return self.work.texts(count)

    def upload(self) -> int:
        """An upload before its audio is read: one Whisper window (its duration is charged once read)."""
        return self.work.audio(0)

    def summaries(self, texts: int, options: SummaryOptions) -> int:
        """Abstractive: every token each text may generate on every beam (the model's defaults where the
        request sets none); a text summarized in chunks is counted once, as if it fitted. Extractive:
        one unit per text (its sentences go through the embedder)."""
        model = self.summarization.abstractive.get(options.model or self.summarization.default)
        if model is None:
            return self.work.texts(texts)
        defaults = model.card.defaults
        tokens = (options.max_new_tokens or defaults.max_new_tokens) * (
            options.num_beams or defaults.num_beams
        )
        return self.work.tokens(texts * tokens)

    def journal_text(self, text: str) -> int:
        """The entry and each of its sentences through the emotion model, and its summary."""
        return self.work.texts(1 + len(split_sentences(text))) + self.summaries(1, SummaryOptions())

    def journal_audio(self) -> int:
        """One window of audio (the rest is charged once the duration is known) and a summary."""
        return self.upload() + self.summaries(1, SummaryOptions())

    def live_session(self, partial_interval_s: float) -> int:
        """A live session, held for its whole life: the audio it sends Triton per second of wall time,
        re-decodes included. Each partial decode is one padded 30 s window every `partial_interval_s`
        (1 s: 30 audio-seconds per second, 480 units by default); final decodes take the place of the
        partials they cancel."""
        return self.work.audio(WHISPER_WINDOW_S / partial_interval_s)
