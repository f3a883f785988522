"""`samo export summarizer`: a T5/FLAN-T5, BART/DistilBART or Pegasus checkpoint as a Triton model.

Writes `<name>/` (the generation model: encoder, decoder and decoder-with-past ONNX run by the shared
engine in a Python-backend model) and `<name>_stream/` (the same weights, decoupled: tokens are sent
as they are produced). The checkpoint's generation settings (task prefix, forced BOS/EOS, beams,
length penalty, n-gram ban, length limits) go into the model card, so the gateway and the Triton
model generate what `generate` would with that checkpoint.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

import samo
from exporters.model_folder import ModelFolder
from exporters.onnx_tools import ExportError, ValidationError
from exporters.seq2seq_onnx import export_with_past, quantize_files
from samo.contracts.summarizer import (
    MAX_NEW_TOKENS,
    GenerationDefaults,
    GenerationOptions,
    SummarizerContract,
    SummarizerModelCard,
)
from samo.generation import generate
from samo.generation.onnx_seq2seq import OnnxSeq2Seq
from samo.generation.search import Request
from samo.triton.model_config import DynamicBatching, QueuePolicy, ServingOptions

logger = logging.getLogger(__name__)

BACKEND = "summarizer"
"""The Python-backend model (`samo/triton/backends/summarizer.py`) of both variants."""
TASK = "text2text-generation-with-past"
ARCHITECTURES = ("t5", "mt5", "bart", "pegasus")
STREAM_SUFFIX = "_stream"
# Texts generated together. Generation is step-bound, so a wider batch costs little per step.
MAX_BATCH_SIZE = 16
# A summary takes hundreds of milliseconds or more: a millisecond of waiting lets concurrent requests meet.
QUEUE_DELAY_US = 1000
# A request is one text's generation, up to MAX_NEW_TOKENS steps: 128 waiting ones are minutes of work on
# a CPU, so more are refused at once (429); one still queued at its request's deadline is dropped (no
# default queue timeout: samo.triton.model_config.QueuePolicy says why).
QUEUE = QueuePolicy(max_queue_size=128)
# T5 has relative positions and no hard limit; 512 is what it was trained on.
FALLBACK_MAX_INPUT_TOKENS = 512
VALIDATION_TEXTS = (
    "Today I walked by the river and thought about the long winter.",
    "Work was hard. I felt tired but proud of what we finished, and I called my sister in the evening.",
)


@dataclass(frozen=True)
class SummarizerExportOptions:
    model: str
    """Local checkpoint folder, or a hub id where a hub is reachable."""
    name: str = "summarizer"
    repository: Path = Path("model_repository")
    quantize: Literal["none", "int8"] = "none"
    target: Literal["cpu", "gpu"] = "cpu"
    atol: float = 1e-3
    intra_op_threads: int = 2


@dataclass(frozen=True)
class SummarizerExportReport:
    model_dir: Path
    stream_dir: Path
    card: SummarizerModelCard
    max_logit_diff: float
    greedy_tokens_equal: bool

    def summary(self) -> str:
        card, defaults = self.card, self.card.defaults
        return (
            f"exported {card.architecture} summarizer to {self.model_dir} (streaming: {self.stream_dir.name})\n"
            f"  prefix {card.prefix!r}, max input {card.max_input_tokens} tokens, quantize {card.quantize}, "
            f"target {card.target}\n"
            f"  defaults: {defaults.num_beams} beams, {defaults.min_new_tokens}-{defaults.max_new_tokens} new tokens, "
            f"length penalty {defaults.length_penalty}, no-repeat n-gram {defaults.no_repeat_ngram_size}\n"
            f"  parity vs PyTorch: max |logit diff| {self.max_logit_diff:.2e}, greedy tokens equal: "
            f"{self.greedy_tokens_equal}"
        )


def export_summarizer(options: SummarizerExportOptions) -> SummarizerExportReport:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(options.model)
        tokenizer = AutoTokenizer.from_pretrained(options.model)
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot load `{options.model}`: {exc}") from exc
    if config.model_type not in ARCHITECTURES:
        raise ExportError(
            f"`{options.model}` is a {config.model_type} model; summarizers: {', '.join(ARCHITECTURES)}"
        )
    torch_model = AutoModelForSeq2SeqLM.from_pretrained(options.model).eval()
    card = model_card(options, config, _generation_config(torch_model), tokenizer)
    with tempfile.TemporaryDirectory(prefix="samo-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        files = export_with_past(options.model, TASK, scratch / "fp32")
        if options.quantize == "int8":
            files = quantize_files(files, scratch / "int8")
        diff, equal = validate_generation(torch_model, tokenizer, card, files[0].parent)
        tolerance = options.atol if options.quantize == "none" else max(options.atol, 1.0)
        if diff > tolerance or (options.quantize == "none" and not equal):
            raise ValidationError(
                f"ONNX decoder logits differ from PyTorch by {diff:.2e} (atol {tolerance}); "
                f"greedy tokens equal: {equal}"
            )
        model_dir, stream_dir = _write_models(options, card, tokenizer, files)
    return SummarizerExportReport(model_dir, stream_dir, card, diff, equal)


def model_card(
    options: SummarizerExportOptions, config: Any, generation: Any, tokenizer: Any
) -> SummarizerModelCard:
    """The card from the checkpoint's generation config, with its summarization task settings on top
    (as transformers' summarization pipeline applies them)."""
    settings = generation.to_dict()
    task = (getattr(config, "task_specific_params", None) or {}).get("summarization", {})
    settings.update({key: value for key, value in task.items() if key != "prefix"})
    prompt_length = 1  # the decoder start token
    max_new = settings.get("max_new_tokens") or max(1, (settings.get("max_length") or 20) - prompt_length)
    min_new = settings.get("min_new_tokens") or max(0, (settings.get("min_length") or 0) - prompt_length)
    eos = settings.get("eos_token_id", config.eos_token_id)
    defaults = GenerationDefaults(
        max_new_tokens=min(max_new, MAX_NEW_TOKENS),
        min_new_tokens=min(min_new, max_new),
        num_beams=settings.get("num_beams") or 1,
        length_penalty=settings.get("length_penalty", 1.0),
        early_stopping=settings.get("early_stopping", False),
        no_repeat_ngram_size=settings.get("no_repeat_ngram_size") or 0,
        repetition_penalty=settings.get("repetition_penalty") or 1.0,
    )
    limit = getattr(tokenizer, "model_max_length", None)
    if not limit or limit > 100_000:
        limit = getattr(config, "max_position_embeddings", None) or FALLBACK_MAX_INPUT_TOKENS
    decoder_start = settings.get("decoder_start_token_id")
    if decoder_start is None:
        decoder_start = config.decoder_start_token_id
    return SummarizerModelCard(
        architecture=config.model_type,
        source=options.model,
        prefix=task.get("prefix", "") or "",
        max_input_tokens=int(limit),
        decoder_start_token_id=int(decoder_start),
        eos_token_ids=tuple(eos) if isinstance(eos, list | tuple) else (int(eos),),
        pad_token_id=int(settings.get("pad_token_id", config.pad_token_id)),
        forced_bos_token_id=settings.get("forced_bos_token_id"),
        forced_eos_token_id=settings.get("forced_eos_token_id"),
        defaults=defaults,
        quantize=options.quantize,
        target=options.target,
        samo_version=samo.__version__,
    )


def _generation_config(torch_model: Any) -> Any:
    """The settings `generate` itself resolves: generation_config.json, or the legacy generation
    fields of config.json where a checkpoint still sets them there (older BART and T5 checkpoints)."""
    try:
        resolved, _ = torch_model._prepare_generation_config(None)
    except (AttributeError, TypeError):  # the private helper moved: the saved generation config
        return torch_model.generation_config
    return resolved


def validate_generation(
    torch_model: Any, tokenizer: Any, card: SummarizerModelCard, onnx_dir: Path
) -> tuple[float, bool]:
    """Max |logit difference| of the first decoder step against PyTorch, on a padded batch, and whether
    greedy decoding of 16 tokens through the engine matches PyTorch's `generate` token for token."""
    import torch

    texts = [card.prefix + text for text in VALIDATION_TEXTS]
    batch = tokenizer(
        texts, padding=True, truncation=True, max_length=card.max_input_tokens, return_tensors="np"
    )
    onnx = OnnxSeq2Seq(onnx_dir, threads=1)
    ids = [
        row[mask.astype(bool)] for row, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True)
    ]
    encoded = onnx.encode_tokens(ids, card.pad_token_id)
    start = np.full((len(texts), 1), card.decoder_start_token_id, dtype=np.int64)
    onnx_logits = onnx.decoder(encoded, np.arange(len(texts))).start(start)
    with torch.no_grad():
        torch_logits = (
            torch_model(
                input_ids=torch.from_numpy(batch["input_ids"]),
                attention_mask=torch.from_numpy(batch["attention_mask"]),
                decoder_input_ids=torch.from_numpy(start),
            )
            .logits[:, -1]
            .numpy()
        )
        expected = torch_model.generate(
            input_ids=torch.from_numpy(batch["input_ids"]),
            attention_mask=torch.from_numpy(batch["attention_mask"]),
            max_new_tokens=16,
            min_new_tokens=0,
            num_beams=1,
            do_sample=False,
            no_repeat_ngram_size=0,
            repetition_penalty=1.0,
        )
    greedy = GenerationOptions(
        max_new_tokens=16, min_new_tokens=0, num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.0
    )
    settings = card.settings(greedy)
    requests = [Request((card.decoder_start_token_id,), settings)] * len(texts)
    ours = generate(onnx, encoded, requests, card.special_tokens)
    equal = all(
        list(generated.tokens) == _strip(row[1:].tolist(), card.pad_token_id, len(generated.tokens))
        for generated, row in zip(ours, expected.numpy(), strict=True)
    )
    return float(np.abs(onnx_logits - torch_logits).max()), equal


def _strip(tokens: list[int], pad: int, keep: int) -> list[int]:
    """transformers pads finished rows of a batch; drop that padding."""
    while len(tokens) > keep and tokens and tokens[-1] == pad:
        tokens.pop()
    return tokens


def serving_options(
    card: SummarizerModelCard, options: SummarizerExportOptions, *, stream_of: str | None
) -> ServingOptions:
    parameters = {"intra_op_threads": str(options.intra_op_threads)}
    if stream_of:
        parameters["weights_model"] = stream_of
    return ServingOptions(
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        batching=DynamicBatching(max_queue_delay_us=QUEUE_DELAY_US, queue=QUEUE),
        instance_kind="KIND_GPU" if card.target == "gpu" else "KIND_CPU",
        warmup=None,
        decoupled=stream_of is not None,
        parameters=parameters,
    )


def _write_models(
    options: SummarizerExportOptions, card: SummarizerModelCard, tokenizer: Any, files: tuple[Path, ...]
) -> tuple[Path, Path]:
    stream_name = options.name + STREAM_SUFFIX
    folder = ModelFolder(options.repository, options.name).create()
    stream = ModelFolder(options.repository, stream_name).create()
    for source in files:
        folder.add(source)
    contract = SummarizerContract().model
    model_dir = folder.finish(
        contract=contract,
        serving=serving_options(card, options, stream_of=None),
        card=card.model_copy(update={"stream_model": stream_name}),
        backend=BACKEND,
        tokenizer=tokenizer,
    )
    # The streaming variant reads the weights, card and tokenizer of `model_dir`.
    stream.finish(
        contract=contract,
        serving=serving_options(card, options, stream_of=options.name),
        card=None,
        backend=BACKEND,
    )
    return model_dir, stream.path
