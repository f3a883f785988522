"""Abstractive summarizers served by Triton: tokenization, long-input handling and detokenization.

Texts past the model's input limit are either truncated (and flagged) or cut into chunks at sentence
boundaries; chunk summaries are then joined and summarized again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from gateway.repository import cards_for_task
from gateway.summarization.sentences import split_sentences
from samo.contracts.summarizer import SummarizerModelCard
from samo.contracts.text import TOKENIZER_DIR
from samo.text_encoding import latest_version


@dataclass(frozen=True)
class Encoded:
    ids: np.ndarray
    truncated: bool


@dataclass(frozen=True)
class AbstractiveModel:
    name: str
    version: str
    card: SummarizerModelCard
    tokenizer: Tokenizer

    @classmethod
    def load(cls, model_dir: Path) -> AbstractiveModel:
        card = SummarizerModelCard.read(model_dir)
        tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_DIR / "tokenizer.json"))
        tokenizer.no_padding()
        # The tokenizer keeps its special tokens (T5's </s>, BART's <s> ... </s>) inside the limit.
        tokenizer.enable_truncation(max_length=card.max_input_tokens)
        return cls(model_dir.name, latest_version(model_dir), card, tokenizer)

    def encode(self, text: str) -> Encoded:
        encoding = self.tokenizer.encode(self.card.prefix + text)
        return Encoded(np.asarray(encoding.ids, dtype=np.int64), bool(encoding.overflowing))

    def chunks(self, text: str) -> list[Encoded]:
        """Consecutive sentences packed into inputs that fit; a sentence too long alone is truncated."""
        pieces: list[Encoded] = []
        current: list[str] = []
        for sentence in split_sentences(text) or [text]:
            candidate = self.encode(" ".join([*current, sentence]))
            if not candidate.truncated or not current:
                current.append(sentence)
                if candidate.truncated:
                    pieces.append(candidate)
                    current = []
                continue
            pieces.append(self.encode(" ".join(current)))
            current = [sentence]
        if current:
            pieces.append(self.encode(" ".join(current)))
        return pieces

    def decode(self, tokens: np.ndarray) -> str:
        return self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True).strip()


def discover_abstractive(repository: Path) -> dict[str, AbstractiveModel]:
    return {
        folder.name: AbstractiveModel.load(folder) for folder in cards_for_task(repository, "summarization")
    }
