"""The gateway's way to its Tritons: balanced over several servers, each model to its own endpoint, models
whose card differs from what Triton serves refused, and model control behind Triton's restricted key.

Real tritonserver processes (the nvidia-pytriton wheel's) on tiny random checkpoints, a real gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tritonclient.grpc.aio import InferenceServerClient

from exporters.emotion.export import EmotionExportOptions, export_emotion
from gateway.card_check import ExpectedModel, mismatches
from gateway.errors import SamoError
from gateway.services import Services, expected_models
from gateway.triton_client import RESTRICTED_HEADER, TritonClient
from gateway.triton_router import TritonRouter
from samo.contracts.cards import CARD_FILE
from samo.contracts.emotion import EmotionModelCard
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from samo.triton.model_config import read_model_config
from tests.conftest import Gateway, gateway_settings, journal_corpus, running_gateway
from tests.triton_statistics import model_statistics

ROOT = Path(__file__).resolve().parents[1]
TEXTS = journal_corpus()[:4]


@pytest.fixture(scope="module")
def repositories(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, tiny_distilbert: Path
) -> tuple[Path, Path]:
    """(one model: tiny_bert; two models: tiny_bert and tiny_distilbert)."""
    both = tmp_path_factory.mktemp("repository-both")
    export_emotion(EmotionExportOptions(model=str(tiny_bert), name="tiny_bert", repository=both))
    export_emotion(EmotionExportOptions(model=str(tiny_distilbert), name="tiny_distilbert", repository=both))
    one = tmp_path_factory.mktemp("repository-one")
    shutil.copytree(both / "tiny_bert", one / "tiny_bert")
    return one, both


@pytest.fixture(scope="module")
def tritons(repositories: tuple[Path, Path], local_triton) -> Iterator[tuple[LocalTriton, LocalTriton]]:
    """A serves tiny_bert; B serves tiny_bert and tiny_distilbert."""
    one, both = repositories
    with local_triton(one) as a, local_triton(both) as b:
        yield a, b


def _settings(repository: Path, triton_grpc_url: str, **overrides: object) -> GatewaySettings:
    return gateway_settings(
        triton_grpc_url=triton_grpc_url,
        model_repository=repository,
        default_emotion_model="tiny_bert",
        health_probe_interval_s=0.5,
        **overrides,
    )


def _inferences(server: LocalTriton, model: str) -> int:
    async def read() -> int:
        client = InferenceServerClient(server.grpc_url)
        try:
            return (await model_statistics(client, model)).inference_count
        finally:
            await client.close()

    return asyncio.run(read())


def _detect(gateway: Gateway, model: str) -> httpx.Response:
    return httpx.post(f"{gateway.http_url}/v1/emotions", json={"texts": TEXTS, "model": model}, timeout=30)


def test_one_gateway_spreads_its_calls_over_two_tritons(
    tritons: tuple[LocalTriton, LocalTriton], repositories: tuple[Path, Path]
) -> None:
    a, b = tritons
    # One gRPC target naming both servers, as a headless Service's DNS name resolves to every pod.
    target = f"ipv4:{a.grpc_url},{b.grpc_url}"
    before = {server.grpc_url: _inferences(server, "tiny_bert") for server in tritons}
    requests = 24
    with running_gateway(_settings(repositories[0], target)) as gateway:
        for _ in range(requests):
            response = _detect(gateway, "tiny_bert")
            assert response.status_code == 200, response.text
    served = {
        server.grpc_url: _inferences(server, "tiny_bert") - before[server.grpc_url] for server in tritons
    }
    # Each request is one call of len(TEXTS) rows; health probes add a few single rows.
    assert sum(served.values()) >= requests * len(TEXTS)
    for url, rows in served.items():
        # Round robin alternates calls: each server gets about half, far more than a stray probe.
        assert rows >= requests * len(TEXTS) // 4, (
            f"{url} served {rows} rows of {sum(served.values())}: {served}"
        )


def test_each_model_goes_to_the_triton_its_setting_names(
    tritons: tuple[LocalTriton, LocalTriton], repositories: tuple[Path, Path]
) -> None:
    a, b = tritons
    both = repositories[1]
    # Without a route, tiny_distilbert goes to A, which does not serve it.
    with running_gateway(_settings(both, a.grpc_url)) as gateway:
        assert _detect(gateway, "tiny_bert").status_code == 200
        missing = _detect(gateway, "tiny_distilbert")
        assert missing.status_code in (404, 503), missing.text
        assert "tiny_distilbert" in missing.json()["error"]["message"]

    before_a, before_b = _inferences(a, "tiny_bert"), _inferences(b, "tiny_bert")
    before_distil = _inferences(b, "tiny_distilbert")
    routed = _settings(both, a.grpc_url, triton_model_urls={"tiny_distilbert": b.grpc_url})
    with running_gateway(routed) as gateway:
        for _ in range(3):
            assert _detect(gateway, "tiny_bert").status_code == 200
            response = _detect(gateway, "tiny_distilbert")
            assert response.status_code == 200, response.text
    assert _inferences(b, "tiny_distilbert") - before_distil >= 3 * len(TEXTS)
    assert _inferences(a, "tiny_bert") - before_a >= 3 * len(TEXTS)
    assert _inferences(b, "tiny_bert") == before_b, (
        "tiny_bert was sent to B, which only serves tiny_distilbert"
    )


def test_the_routes_setting_reads_json_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMO_TRITON_MODEL_URLS", '{"whisper": "dns:///samo-triton-whisper-headless:8001"}')
    monkeypatch.setenv("SAMO_TRITON_GRPC_URL", "dns:///samo-triton-text-headless:8001")
    settings = GatewaySettings()
    assert settings.triton_model_urls == {"whisper": "dns:///samo-triton-whisper-headless:8001"}

    async def routes() -> None:  # grpc.aio channels belong to an event loop
        router = TritonRouter.from_settings(settings)
        try:
            assert router.client_for("whisper").url == "dns:///samo-triton-whisper-headless:8001"
            assert router.client_for("emotion").url == "dns:///samo-triton-text-headless:8001"
            assert set(router.endpoints) == {
                "dns:///samo-triton-whisper-headless:8001",
                "dns:///samo-triton-text-headless:8001",
            }
        finally:
            await router.close()

    asyncio.run(routes())


# --- model cards against what Triton serves ---------------------------------------------------------


def _mismatched_copy(source: Path, into: Path, model: str, **card_changes: object) -> Path:
    shutil.copytree(source, into)
    card = EmotionModelCard.read(into / model).model_copy(update=card_changes)
    (into / model / CARD_FILE).write_text(card.model_dump_json(indent=2))
    return into


def test_a_model_whose_card_differs_from_triton_is_refused_and_shown(
    tritons: tuple[LocalTriton, LocalTriton],
    repositories: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, b = tritons
    # The gateway's copy says tiny_distilbert takes 128 rows a call; Triton's config allows 64.
    repository = _mismatched_copy(
        repositories[1], tmp_path / "gateway-copy", "tiny_distilbert", max_batch_size=128
    )
    with (
        caplog.at_level(logging.ERROR, logger="gateway.triton_router"),
        running_gateway(_settings(repository, b.grpc_url)) as gateway,
    ):
        assert _detect(gateway, "tiny_bert").status_code == 200
        refused = _detect(gateway, "tiny_distilbert")
        health = httpx.get(f"{gateway.http_url}/health/models", timeout=30).json()
        ready = httpx.get(f"{gateway.http_url}/health/ready", timeout=30)
    assert refused.status_code == 503, refused.text
    message = refused.json()["error"]["message"]
    assert "tiny_distilbert" in message and "max_batch_size is 64 in Triton" in message
    states = {model["model"]: model for model in health["models"]}
    assert states["tiny_bert"]["status"] == "serving"
    assert states["tiny_distilbert"]["status"] != "serving"
    assert "max_batch_size is 64 in Triton" in states["tiny_distilbert"]["reason"]
    assert ready.status_code == 503 and "tiny_distilbert" in ready.text
    logged = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert logged and "tiny_distilbert" in logged[0] and "max_batch_size" in logged[0]


def test_card_check_reports_each_kind_of_difference(repositories: tuple[Path, Path]) -> None:
    folder = repositories[1] / "tiny_bert"
    card = EmotionModelCard.read(folder)
    config = read_model_config(folder)
    assert mismatches(ExpectedModel("tiny_bert", card.contract.model, card.max_batch_size), config) == []

    def differences(**changes: object) -> str:
        changed = card.model_copy(update=changes)
        return "; ".join(
            mismatches(ExpectedModel("tiny_bert", changed.contract.model, changed.max_batch_size), config)
        )

    assert "requires input `token_type_ids`" in differences(token_type_ids=False)
    assert "output `logits` has dims [28] in Triton, [3]" in differences(labels=("a", "b", "c"))
    assert "not ragged in the card" in differences(target="gpu")
    assert "max_batch_size is 64" in differences(max_batch_size=65)


def test_every_exported_model_matches_its_own_card(serving_repository: Path) -> None:
    """No false refusals: every kind of model the exporters write (emotion, embedder, Whisper CTranslate2
    and ONNX, summarizer and its streaming variant) matches the contract its card gives the gateway."""

    async def expected() -> dict[str, ExpectedModel]:  # grpc.aio channels belong to an event loop
        services = Services.open(
            GatewaySettings(model_repository=serving_repository, default_summarizer="extractive")
        )
        try:
            return expected_models(services.emotions, services.transcription, services.summarization)
        finally:
            await services.triton.close()

    models = asyncio.run(expected())
    assert {"emotion", "embedder", "whisper", "whisper_onnx", "tiny_t5", "tiny_t5_stream"} <= set(models)
    for name, model in models.items():
        assert mismatches(model, read_model_config(serving_repository / name)) == [], name


@pytest.mark.parametrize("golden", ["emotion_gpu.pbtxt", "emotion_gpu-torch.pbtxt", "emotion_cpu.pbtxt"])
def test_gpu_and_cpu_configs_match_cards_of_their_target(golden: str) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    config = text_format.Parse(
        (ROOT / "tests" / "golden" / golden).read_text(), model_config_pb2.ModelConfig()
    )
    target = golden.removeprefix("emotion_").removesuffix(".pbtxt")
    card = EmotionModelCard(
        kind="fine-tuned",
        source="test",
        labels=tuple(f"label{i}" for i in range(config.output[0].dims[0])),
        activation="sigmoid",
        max_length=128,
        token_type_ids=any(t.name == "token_type_ids" for t in config.input),
        target=target,
    )
    assert mismatches(ExpectedModel("emotion", card.contract.model, card.max_batch_size), config) == []


# --- Triton's model control behind a key only the gateway holds --------------------------------------


def test_model_control_needs_the_restricted_key(repositories: tuple[Path, Path], local_triton) -> None:
    key = "only-the-gateway-knows"
    restricted = f"--grpc-restricted-protocol=model-repository,shared-memory:{RESTRICTED_HEADER}={key}"

    async def run(server: LocalTriton) -> None:
        anyone = TritonClient(server.grpc_url, 30)
        gateway = TritonClient(server.grpc_url, 30, restricted_key=key)
        try:
            with pytest.raises(SamoError) as refused:
                await anyone.reload_model("tiny_bert")
            assert "tiny_bert" in refused.value.message
            await gateway.reload_model("tiny_bert")
            # Inference stays open to the gateway's ordinary calls (it is not a restricted protocol).
            assert await anyone.is_model_ready("tiny_bert")
            outputs = await anyone.model_config("tiny_bert")
            assert outputs.name == "tiny_bert"
        finally:
            await anyone.close()
            await gateway.close()

    with local_triton(repositories[0], extra_args=(restricted,)) as server:
        asyncio.run(run(server))


def test_the_restricted_key_setting_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAMO_TRITON_RESTRICTED_KEY", "s3cret-value")
    settings = GatewaySettings()
    assert "s3cret-value" not in repr(settings) and "s3cret-value" not in json.dumps(
        settings.model_dump(mode="json")
    )
    assert settings.triton_restricted_key is not None
    assert settings.triton_restricted_key.get_secret_value() == "s3cret-value"
