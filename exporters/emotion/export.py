"""`samo export emotion`: checkpoint -> validated ONNX -> Triton model folder."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

import samo
from exporters.emotion import zero_shot
from exporters.encoder_serving import (
    ONNX_FILE,
    TorchServing,
    encoder_backend,
    encoder_serving_options,
)
from exporters.model_folder import ModelFolder
from exporters.onnx_tools import (
    ExportError,
    ParityReport,
    Session,
    convert_fp16,
    cpu_session,
    export_onnx,
    optimize_transformer,
    quantize_int8,
    validate_against_torch,
)
from exporters.torch_target import Prototypes, ServedSession, save_checkpoint
from samo.contracts.emotion import (
    LOGITS,
    Activation,
    EmotionContract,
    EmotionModelCard,
    Thresholds,
    to_probabilities,
)
from samo.contracts.text import DEFAULT_INSTANCE_COUNT, DEFAULT_INTRA_OP_THREADS, EncoderTarget
from samo.torch_encoding import CompileMode, Head, Precision
from samo.triton.model_config import ServingOptions

logger = logging.getLogger(__name__)

Quantization = Literal["none", "int8", "fp16"]

BATCH_DEPENDENCE_WARNING = 1e-4


@dataclass(frozen=True)
class EmotionExportOptions:
    model: str | None = None
    """Checkpoint folder or hub id; None exports the embedded zero-shot MiniLM default."""
    name: str = "emotion"
    quantize: Quantization = "none"
    target: EncoderTarget = "cpu"
    repository: Path = Path("model_repository")
    activation: Activation | Literal["auto"] = "auto"
    max_length: int | None = None
    atol: float = 1e-4
    intra_op_threads: int = DEFAULT_INTRA_OP_THREADS
    instance_count: int = DEFAULT_INSTANCE_COUNT
    response_cache: bool = False
    """Triton's response cache for repeated texts (`samo bench sweep`: 7x on repeats, nothing lost on
    unique texts); the server must run with a cache (`samo serve --response-cache-mb`)."""
    precision: Precision | None = None
    """`gpu-torch` only: what the GPU computes in (fp16 when not given); the CPU computes in fp32."""
    compile: CompileMode = "off"
    """`gpu-torch` only: `torch.compile` per bucket shape on GPU (CUDA graphs with reduce-overhead)."""

    def check(self) -> None:
        """Flag combinations that cannot work, with the fix in the message."""
        if self.target == "gpu" and self.quantize == "int8":
            raise ExportError(
                "`--quantize int8` is for `--target cpu`; on GPU TensorRT builds the engine itself: "
                "use `--quantize fp16` (or none, served as fp16 by TensorRT)"
            )
        check_torch_flags(self.target, self.quantize, self.precision, self.compile)
        if self.max_length is not None and self.max_length < 8:
            raise ExportError(f"`--max-length` must be at least 8 tokens, got {self.max_length}")
        if not self.name.replace("-", "_").isidentifier():
            raise ExportError(f"`--name` must be letters, digits, `_` or `-`, got {self.name!r}")


def check_torch_flags(
    target: EncoderTarget, quantize: Quantization, precision: Precision | None, compile_mode: CompileMode
) -> None:
    """`--precision` and `--torch-compile` belong to `--target gpu-torch`, which has no `--quantize`."""
    if target == "gpu-torch" and quantize != "none":
        raise ExportError(
            f"`--quantize {quantize}` is for the ONNX targets; `--target gpu-torch` runs the checkpoint "
            "in PyTorch: choose its GPU precision with `--precision fp16|bf16`"
        )
    if target != "gpu-torch" and precision is not None:
        raise ExportError(
            f"`--precision` is for `--target gpu-torch`; for `--target {target}` use `--quantize` instead"
        )
    if target != "gpu-torch" and compile_mode != "off":
        raise ExportError(f"`--torch-compile` is for `--target gpu-torch`, not `--target {target}`")


@dataclass(frozen=True)
class AccuracyReport:
    """Final graph against the fp32 graph, on probabilities."""

    texts: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    decision_agreement: float

    def __str__(self) -> str:
        return (
            f"{self.texts} texts: max |p - p_fp32| = {self.max_abs_diff:.4f}, mean {self.mean_abs_diff:.5f}, "
            f"top-1 label agreement {self.top1_agreement:.1%}, decisions at 0.5 agreement "
            f"{self.decision_agreement:.2%}"
        )


def batch_dependence(session: Session, tokenizer: PreTrainedTokenizerBase, card: EmotionModelCard) -> float:
    """Largest score change between a text run alone and the same text inside a padded batch.

    Near 1e-7 for float graphs. Dynamic int8 computes activation scales over the whole batch, so
    there a text's scores depend on its neighbours and on padding.
    """
    texts = sample_texts()[:32]
    batched = session.run([LOGITS], _encode(tokenizer, texts, card))[0]
    alone = np.concatenate([session.run([LOGITS], _encode(tokenizer, [text], card))[0] for text in texts])
    return float(
        np.abs(to_probabilities(batched, card.activation) - to_probabilities(alone, card.activation)).max()
    )


@dataclass(frozen=True)
class ExportReport:
    model_dir: Path
    card: EmotionModelCard
    parity: ParityReport
    batch_dependence: float
    fused_ops: dict[str, int] = field(default_factory=dict)
    accuracy: AccuracyReport | None = None
    torch_serving: TorchServing | None = None

    def summary(self) -> str:
        lines = [
            f"exported {self.card.kind} emotion model to {self.model_dir}",
            f"  labels: {len(self.card.labels)}, max length {self.card.max_length} tokens, target "
            f"{self.card.target}, quantization {self.card.quantization}",
        ]
        if self.torch_serving:
            lines.append(
                f"  PyTorch `{self.torch_serving.head}` head: {self.torch_serving.precision} on GPU (fp32 on "
                f"CPU), torch.compile {self.torch_serving.compile}"
            )
            lines.append(f"  parity served checkpoint (fp32, CPU) vs PyTorch: {self.parity}")
        else:
            lines.append(f"  parity fp32 vs PyTorch: {self.parity}")
        if self.fused_ops:
            lines.append("  fused: " + ", ".join(f"{op} x{n}" for op, n in sorted(self.fused_ops.items())))
        if self.accuracy:
            final = "optimized" if self.card.quantization == "none" else self.card.quantization
            lines.append(f"  {final} vs exported fp32: {self.accuracy}")
        lines.append(f"  batched vs alone: max score change {self.batch_dependence:.2e}")
        if self.batch_dependence > BATCH_DEPENDENCE_WARNING:
            lines.append(
                "  warning: scores depend on what else is in the dynamic batch (dynamic int8 scales "
                "activations per batch); export without --quantize int8 for answers independent of load"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Loaded:
    module: torch.nn.Module
    """What the ONNX graph is exported from and every target is validated against."""
    checkpoint: torch.nn.Module
    """The Hugging Face model inside `module`, saved as is by `--target gpu-torch`."""
    tokenizer: PreTrainedTokenizerBase
    card: EmotionModelCard
    num_heads: int
    hidden_size: int
    prototypes: Prototypes | None = None


class _LogitsOf(torch.nn.Module):
    """A sequence classifier with positional inputs in contract order, returning logits only."""

    def __init__(self, model: torch.nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = tuple(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs, strict=True))).logits


def _max_length(tokenizer: PreTrainedTokenizerBase, config: PretrainedConfig) -> int:
    if tokenizer.model_max_length and tokenizer.model_max_length < 100_000:
        return int(tokenizer.model_max_length)
    # RoBERTa-style position ids start after the padding index.
    offset = 2 if config.model_type in {"roberta", "xlm-roberta", "camembert"} else 0
    return int(config.max_position_embeddings) - offset


def _load_checkpoint(options: EmotionExportOptions) -> _Loaded:
    assert options.model is not None
    try:
        config = AutoConfig.from_pretrained(options.model)
        tokenizer = AutoTokenizer.from_pretrained(options.model)
        model = AutoModelForSequenceClassification.from_pretrained(options.model).eval()
    except (OSError, ValueError) as exc:
        raise ExportError(
            f"cannot load a sequence-classification checkpoint from {options.model!r}: {exc}"
        ) from exc
    if not tokenizer.is_fast:
        raise ExportError(f"{options.model!r} has no fast tokenizer (tokenizer.json); the gateway needs one")
    token_type_ids = (
        "token_type_ids" in tokenizer.model_input_names and getattr(config, "type_vocab_size", 0) > 0
    )
    contract = EmotionContract(num_labels=config.num_labels, token_type_ids=token_type_ids)
    labels = tuple(
        config.id2label[i]  # pyright: ignore[reportOptionalSubscript]  # set by PretrainedConfig.__init__
        for i in range(config.num_labels)
    )
    activation = options.activation
    if activation == "auto":
        activation = "softmax" if config.problem_type == "single_label_classification" else "sigmoid"
    card = EmotionModelCard(
        kind="fine-tuned",
        source=options.model,
        labels=labels,
        activation=activation,
        max_length=options.max_length or _max_length(tokenizer, config),
        token_type_ids=token_type_ids,
        pad_token_id=tokenizer.pad_token_id or 0,
        quantization=options.quantize,
        target=options.target,
        samo_version=samo.__version__,
    )
    return _Loaded(
        module=_LogitsOf(model, contract.model.input_names),
        checkpoint=model,
        tokenizer=tokenizer,
        card=card,
        num_heads=getattr(config, "num_attention_heads", 0),
        hidden_size=getattr(config, "hidden_size", 0),
    )


def _load_zero_shot(options: EmotionExportOptions) -> _Loaded:
    if options.activation not in ("auto", "none"):
        raise ExportError("the zero-shot default outputs probabilities; `--activation` must stay auto")
    built = zero_shot.build_zero_shot_model()
    encoder_config = built.module.embedder.encoder.config
    card = EmotionModelCard(
        kind="zero-shot",
        source=zero_shot.SOURCE,
        description=zero_shot.DESCRIPTION,
        labels=built.labels,
        activation="none",
        max_length=options.max_length or built.max_length,
        token_type_ids=True,
        # transformers reads `pad_token_id` through an untyped `__getattr__` (str, list or int).
        pad_token_id=built.tokenizer.pad_token_id or 0,  # pyright: ignore[reportArgumentType]
        quantization=options.quantize,
        target=options.target,
        samo_version=samo.__version__,
    )
    return _Loaded(
        module=built.module,
        checkpoint=built.module.embedder.encoder,
        tokenizer=built.tokenizer,
        card=card,
        num_heads=encoder_config.num_attention_heads,
        hidden_size=encoder_config.hidden_size,
        prototypes=Prototypes(built.module.prototypes, built.module.bias, zero_shot.SCALE),
    )


def sample_texts() -> list[str]:
    """Journal-style sentences for validation and the accuracy report (the prototype phrases)."""
    return [text for texts in zero_shot.load_prototype_phrases().values() for text in texts]


class EncoderCard(Protocol):
    """What encoding for validation needs from a card: the token limit and the contract's inputs."""

    @property
    def max_length(self) -> int: ...

    @property
    def contract(self) -> Any: ...


def _encode(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], card: EncoderCard
) -> dict[str, np.ndarray]:
    encoded = tokenizer(
        list(texts), padding=True, truncation=True, max_length=card.max_length, return_tensors="np"
    )
    # BatchEncoding's `__getitem__` is hinted `Any | Encoding`; a name gives an array (return_tensors="np").
    return {
        name: encoded[name].astype(np.int64)  # pyright: ignore[reportAttributeAccessIssue]
        for name in card.contract.model.input_names
    }


def validation_batches(tokenizer: PreTrainedTokenizerBase, card: EncoderCard) -> list[dict[str, np.ndarray]]:
    """Batch sizes 1 to 16, short and long rows mixed, and rows truncated at the maximum length."""
    texts = sample_texts()
    long_text = " ".join(texts)
    return [
        _encode(tokenizer, texts[:1], card),
        _encode(tokenizer, texts[1:4], card),
        _encode(tokenizer, [texts[5], " ".join(texts[6:12]), texts[13]], card),
        _encode(tokenizer, texts[20:36], card),
        _encode(tokenizer, [long_text, texts[40]], card),
    ]


def _accuracy(
    reference: Path, final: Path, tokenizer: PreTrainedTokenizerBase, card: EmotionModelCard
) -> AccuracyReport:
    texts = sample_texts()
    fp32, quantized = cpu_session(reference), cpu_session(final)
    expected, actual = [], []
    for start in range(0, len(texts), 32):
        batch = _encode(tokenizer, texts[start : start + 32], card)
        expected.append(fp32.run([LOGITS], batch)[0])
        actual.append(quantized.run([LOGITS], batch)[0])
    p_ref = to_probabilities(np.concatenate(expected), card.activation)
    p_new = to_probabilities(np.concatenate(actual), card.activation)
    diff = np.abs(p_new - p_ref)
    return AccuracyReport(
        texts=len(texts),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float((p_ref.argmax(1) == p_new.argmax(1)).mean()),
        decision_agreement=float(((p_ref >= 0.5) == (p_new >= 0.5)).mean()),
    )


def torch_head(card: EmotionModelCard) -> Head:
    """The head `gpu-torch` rebuilds: the zero-shot default's prototypes, or a classifier's logits."""
    return "prototypes" if card.kind == "zero-shot" else "logits"


def torch_serving(card: EmotionModelCard, options: EmotionExportOptions) -> TorchServing | None:
    if card.target != "gpu-torch":
        return None
    return TorchServing(
        head=torch_head(card),
        max_length=card.max_length,
        precision=options.precision or "fp16",
        compile=options.compile,
    )


def serving_options(card: EmotionModelCard, options: EmotionExportOptions) -> ServingOptions:
    return encoder_serving_options(
        target=card.target,
        padding_mask=card.contract.padding_mask,
        pad_token_id=card.pad_token_id,
        max_batch_size=card.max_batch_size,
        max_length=card.max_length,
        intra_op_threads=options.intra_op_threads,
        instance_count=options.instance_count,
        torch_serving=torch_serving(card, options),
        response_cache=options.response_cache,
    )


def export_emotion(options: EmotionExportOptions) -> ExportReport:
    options.check()
    loaded = _load_zero_shot(options) if options.model is None else _load_checkpoint(options)
    if options.target == "gpu-torch":
        return _export_torch(options, loaded)
    card, tokenizer = loaded.card, loaded.tokenizer
    contract = card.contract.model

    with tempfile.TemporaryDirectory(prefix="samo-export-") as scratch_dir:
        scratch = Path(scratch_dir)
        fp32 = export_onnx(
            loaded.module, contract, _as_torch(validation_batches(tokenizer, card)[1]), scratch / "fp32.onnx"
        )
        parity = validate_against_torch(
            loaded.module, cpu_session(fp32), validation_batches(tokenizer, card), LOGITS, options.atol
        )
        logger.info("parity: %s", parity)

        final, fused, accuracy = fp32, {}, None
        if options.target == "cpu" and loaded.num_heads:
            final = scratch / "optimized.onnx"
            fused = optimize_transformer(
                fp32, final, num_heads=loaded.num_heads, hidden_size=loaded.hidden_size
            )
        if options.quantize == "int8":
            quantized = scratch / "int8.onnx"
            quantize_int8(final, quantized)
            final = quantized
        elif options.quantize == "fp16":
            half = scratch / "fp16.onnx"
            convert_fp16(final, half)
            final = half
        if final is not fp32:
            accuracy = _accuracy(fp32, final, tokenizer, card)
        dependence = batch_dependence(cpu_session(final), tokenizer, card)

        model_dir = _write_model_folder(options, card, tokenizer, final)
    report = ExportReport(
        model_dir=model_dir,
        card=card,
        parity=parity,
        batch_dependence=dependence,
        fused_ops=fused,
        accuracy=accuracy,
    )
    logger.info("%s", report.summary())
    return report


def _export_torch(options: EmotionExportOptions, loaded: _Loaded) -> ExportReport:
    """`--target gpu-torch`: the checkpoint saved as is, validated as the backend will run it."""
    card, tokenizer = loaded.card, loaded.tokenizer
    contract = card.contract
    folder = ModelFolder(options.repository, options.name).create()
    with folder.removed_on_error():
        head = torch_head(card)
        save_checkpoint(folder.version_dir, loaded.checkpoint, head, loaded.prototypes)
        served = ServedSession(
            folder.version_dir,
            head=head,
            input_names=contract.model.input_names,
            padding_mask=contract.padding_mask,
            pad_token_id=card.pad_token_id,
            max_length=card.max_length,
        )
        batches = validation_batches(tokenizer, card)
        parity = validate_against_torch(loaded.module, served, batches, LOGITS, options.atol, served="served")
        logger.info("parity: %s", parity)
        dependence = batch_dependence(served, tokenizer, card)
        folder.finish(
            contract=contract.model,
            serving=serving_options(card, options),
            card=card,
            backend=encoder_backend(card.target),
            tokenizer=tokenizer,
        )
        Thresholds.default(card.labels).write(folder.path)
    report = ExportReport(
        model_dir=folder.path,
        card=card,
        parity=parity,
        batch_dependence=dependence,
        torch_serving=torch_serving(card, options),
    )
    logger.info("%s", report.summary())
    return report


def _as_torch(batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array) for name, array in batch.items()}


def _write_model_folder(
    options: EmotionExportOptions, card: EmotionModelCard, tokenizer: PreTrainedTokenizerBase, onnx_file: Path
) -> Path:
    folder = ModelFolder(options.repository, options.name).create()
    folder.add(onnx_file, ONNX_FILE)
    folder.finish(
        contract=card.contract.model,
        serving=serving_options(card, options),
        card=card,
        backend=encoder_backend(card.target),
        tokenizer=tokenizer,
    )
    Thresholds.default(card.labels).write(folder.path)
    return folder.path
