"""`samo export whisper`: a Hugging Face Whisper checkpoint -> ONNX (optimum) -> a Triton model decoded
by SAMO's shared seq2seq engine (`samo/triton/backends/whisper_onnx.py`)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import samo
from exporters.errors import ExportError
from exporters.model_folder import ModelFolder
from exporters.seq2seq_onnx import export_with_past
from exporters.whisper.serving import language_names, whisper_serving_options
from samo.contracts.whisper import SAMPLE_RATE, WhisperContract, WhisperModelCard
from samo.generation.onnx_seq2seq import ONNX_FILES

logger = logging.getLogger(__name__)

BACKEND = "whisper_onnx"
TASK = "automatic-speech-recognition-with-past"
# What model.py reads besides the ONNX graphs; optimum saves them next to the graphs. optimum's own
# validation only warns, so the export compares with PyTorch itself (`_validate`).
REQUIRED_FILES = ("config.json", "generation_config.json", "tokenizer.json", "preprocessor_config.json")


@dataclass(frozen=True)
class WhisperOnnxExportOptions:
    model: str | Path
    """Hugging Face Whisper folder (e.g. from `samo convert ct2-whisper`) or hub id."""
    name: str = "whisper_onnx"
    repository: Path = Path("model_repository")
    target: Literal["cpu", "gpu"] = "cpu"
    intra_threads: int | None = None
    """ONNX Runtime threads per instance; None: the instance's share of the server's cores (`auto`)."""
    instances: int | None = None
    """Triton instances (per GPU on a GPU server); None: two on the CPU, one per GPU."""
    atol: float = 1e-3
    """Largest allowed difference from PyTorch on encoder outputs and decoder logits."""


@dataclass(frozen=True)
class WhisperOnnxExportReport:
    model_dir: Path
    card: WhisperModelCard
    onnx_bytes: int
    max_difference: float

    def summary(self) -> str:
        card = self.card
        return (
            f"exported Whisper to ONNX at {self.model_dir}; largest difference from PyTorch "
            f"{self.max_difference:.1e} (encoder outputs and logits)\n"
            f"  source {card.source}, {card.language_summary}, {self.onnx_bytes / 1e6:.0f} MB of ONNX "
            f"({', '.join(ONNX_FILES)}), {card.compute_type}, target {card.target}"
        )


def _check_model(model: str | Path) -> None:
    folder = Path(model)
    if not folder.exists():
        if isinstance(model, Path) or str(model).startswith((".", "/")):
            raise ExportError(
                f"{model} does not exist; pass a Hugging Face Whisper folder or hub id to `--model`"
            )
        return  # a hub id: optimum resolves it (offline, from the cache)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ExportError(f"{folder} has no config.json; pass a Hugging Face Whisper folder to `--model`")
    model_type = json.loads(config_file.read_text()).get("model_type")
    if model_type != "whisper":
        raise ExportError(f"{folder} holds a `{model_type}` model, not Whisper")


def _validate(model: str | Path, version_dir: Path, atol: float) -> float:
    """Largest logit difference between ONNX Runtime and PyTorch on a synthetic window: the encoder,
    the prompt pass and two cached steps; ExportError beyond `atol`."""
    import numpy as np
    import tokenizers
    import torch
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    from samo.generation.onnx_seq2seq import OnnxSeq2Seq
    from samo.generation.whisper import WhisperVocabulary

    reference = WhisperForConditionalGeneration.from_pretrained(str(model), dtype=torch.float32).eval()
    tokenizer = tokenizers.Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    vocabulary = WhisperVocabulary.from_folder(version_dir, tokenizer)
    # A chirp with noise, 7 s: deterministic, and not silence (which barely exercises the weights).
    time = np.arange(7 * SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    audio = 0.3 * np.sin(2 * np.pi * (200 + 150 * time) * time) + 0.05 * np.random.default_rng(
        0
    ).standard_normal(time.size)
    extractor = WhisperFeatureExtractor.from_pretrained(str(version_dir))
    features = extractor(
        [audio.astype(np.float32)], sampling_rate=SAMPLE_RATE, return_tensors="np"
    ).input_features
    onnx = OnnxSeq2Seq(version_dir)
    encoded = onnx.encode_features(features)
    session = onnx.decoder(encoded, np.asarray([0]))
    prompt = np.asarray([[vocabulary.sot, vocabulary.no_timestamps]], dtype=np.int64)
    logits = [session.start_all(prompt)]
    tokens = prompt
    for _ in range(2):
        token = logits[-1][:, -1].argmax(axis=-1)
        tokens = np.concatenate([tokens, token[:, None]], axis=1)
        logits.append(session.step(token)[:, None, :])
    with torch.no_grad():
        hidden = reference.model.encoder(torch.from_numpy(features)).last_hidden_state
        expected = reference(
            encoder_outputs=(hidden,), decoder_input_ids=torch.from_numpy(tokens)
        ).logits.numpy()
    worst = max(
        float(np.abs(encoded.hidden - hidden.numpy()).max()),
        float(np.abs(np.concatenate(logits, axis=1) - expected).max()),
    )
    if worst > atol:
        raise ExportError(
            f"ONNX Whisper differs from PyTorch by {worst:.2e} (encoder or logits); tolerance {atol:.0e}"
        )
    return worst


def _languages(version_dir: Path) -> tuple[str, ...]:
    generation = json.loads((version_dir / "generation_config.json").read_text())
    if not generation.get("is_multilingual", bool(generation.get("lang_to_id"))):
        return ("en",)
    return tuple(token[2:-2] for token in generation.get("lang_to_id") or {})


def export_whisper_onnx(options: WhisperOnnxExportOptions) -> WhisperOnnxExportReport:
    _check_model(options.model)
    model = ModelFolder(options.repository, options.name).create()
    version_dir = model.version_dir
    with model.removed_on_error():
        export_with_past(str(options.model), TASK, version_dir)
        missing = [name for name in REQUIRED_FILES if not (version_dir / name).is_file()]
        if missing:
            raise ExportError(f"{options.model} lacks what the served model reads: {', '.join(missing)}")
        max_difference = _validate(options.model, version_dir, options.atol)
    languages = _languages(version_dir)
    card = WhisperModelCard(
        backend="onnx",
        source=str(options.model),
        multilingual=languages != ("en",),
        languages=languages,
        language_names=language_names(languages),
        compute_type="float32",
        target=options.target,
        samo_version=samo.__version__,
    )
    model_dir = model.finish(
        contract=WhisperContract().model,
        serving=whisper_serving_options(
            options.target,
            {"intra_threads": "auto" if options.intra_threads is None else str(options.intra_threads)},
        ),
        card=card,
        backend=BACKEND,
    )
    report = WhisperOnnxExportReport(
        model_dir=model_dir,
        card=card,
        onnx_bytes=sum((version_dir / name).stat().st_size for name in ONNX_FILES),
        max_difference=max_difference,
    )
    logger.info("%s", report.summary())
    return report
