"""Abstractive summarization served end to end: export, the Triton generation model and its
streaming variant, the gateway's /v1/summarize and gRPC Summarize, against transformers' generate."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
from tritonclient.grpc.aio import InferenceServerClient

from exporters.onnx_tools import ExportError
from exporters.summarizer.export import SummarizerExportOptions, export_summarizer
from gateway.client import GrpcClient
from gateway.services import Services
from gateway.summarization.service import EXTRACTIVE, SummarizationService
from samo.contracts.summarizer import SummarizerModelCard
from samo.settings import GatewaySettings
from samo.triton.local_server import LocalTriton
from samo.triton.model_config import read_model_config
from tests.conftest import Gateway, journal_corpus
from tests.seq2seq_models import MAX_INPUT_TOKENS, build_tiny_bart, build_tiny_pegasus

TEXTS = journal_corpus()[:6]
LONG_TEXT = " ".join(journal_corpus()[:12])


class Reference:
    """transformers' generate on the same checkpoint, one text at a time."""

    def __init__(self, folder: Path) -> None:
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def ids(self, text: str) -> np.ndarray:
        return self.tokenizer("summarize: " + text, truncation=True, return_tensors="np")["input_ids"][0]

    def generate(self, text: str, **settings) -> list[int]:
        with torch.no_grad():
            output = self.model.generate(torch.from_numpy(self.ids(text))[None], do_sample=False, **settings)
        row = output[0, 1:].tolist()
        return row[: row.index(1) + 1] if 1 in row else row

    def text(self, text: str, **settings) -> str:
        return self.tokenizer.decode(self.generate(text, **settings), skip_special_tokens=True).strip()


@pytest.fixture(scope="module")
def reference(tiny_t5: Path) -> Reference:
    return Reference(tiny_t5)


def _inputs(ids: np.ndarray, options: dict) -> list[grpcclient.InferInput]:
    tokens = grpcclient.InferInput("input_ids", [1, len(ids)], "INT64")
    tokens.set_data_from_numpy(ids[None].astype(np.int64))
    settings = grpcclient.InferInput("options", [1, 1], "BYTES")
    settings.set_data_from_numpy(np.array([[json.dumps(options).encode()]], dtype=np.object_))
    return [tokens, settings]


SETTINGS = [
    {"num_beams": 1, "max_new_tokens": 12},
    {"num_beams": 4, "max_new_tokens": 10},
    {"num_beams": 1, "max_new_tokens": 7, "min_new_tokens": 7, "repetition_penalty": 1.3},
    {"num_beams": 4, "max_new_tokens": 12, "length_penalty": 2.0, "no_repeat_ngram_size": 2},
    {"num_beams": 1, "max_new_tokens": 3},
    {"num_beams": 2, "max_new_tokens": 9, "early_stopping": True},
]


def test_card_carries_the_checkpoints_generation_settings(tmp_path: Path) -> None:
    folder = build_tiny_bart(tmp_path / "bart", journal_corpus())
    config = json.loads((folder / "config.json").read_text())
    config["task_specific_params"] = {
        "summarization": {
            "num_beams": 4,
            "length_penalty": 2.0,
            "max_length": 30,
            "min_length": 6,
            "no_repeat_ngram_size": 3,
            "early_stopping": True,
        }
    }
    config["forced_bos_token_id"] = 0
    (folder / "config.json").write_text(json.dumps(config))
    report = export_summarizer(
        SummarizerExportOptions(model=str(folder), name="bart", repository=tmp_path / "repo")
    )
    card = SummarizerModelCard.read(tmp_path / "repo" / "bart")
    assert card.architecture == "bart" and card.prefix == ""
    assert (card.decoder_start_token_id, card.eos_token_ids, card.pad_token_id) == (2, (2,), 1)
    assert (card.forced_bos_token_id, card.forced_eos_token_id) == (0, 2)
    defaults = card.defaults
    assert (defaults.num_beams, defaults.max_new_tokens, defaults.min_new_tokens) == (4, 29, 5)
    assert (defaults.length_penalty, defaults.no_repeat_ngram_size, defaults.early_stopping) == (2.0, 3, True)
    assert card.max_input_tokens == MAX_INPUT_TOKENS and card.stream_model == "bart_stream"
    assert report.greedy_tokens_equal and report.max_logit_diff < 1e-3
    assert read_model_config(tmp_path / "repo" / "bart_stream").model_transaction_policy.decoupled
    assert not read_model_config(tmp_path / "repo" / "bart").model_transaction_policy.decoupled
    assert sorted(p.name for p in (tmp_path / "repo" / "bart" / "1").iterdir()) == [
        "decoder_model.onnx",
        "decoder_with_past_model.onnx",
        "encoder_model.onnx",
        "model.py",
    ]


def test_export_refuses_what_is_not_a_summarizer(tiny_bert: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="bert model; summarizers: t5"):
        export_summarizer(SummarizerExportOptions(model=str(tiny_bert), repository=tmp_path))
    with pytest.raises(ExportError, match="cannot load"):
        export_summarizer(SummarizerExportOptions(model=str(tmp_path / "missing"), repository=tmp_path))


def test_one_dynamic_batch_with_mixed_settings_matches_generate(
    triton: LocalTriton, reference: Reference
) -> None:
    """Concurrent requests, each with its own settings, share Triton batches and get their own answer."""

    async def run() -> list[list[int]]:
        client = InferenceServerClient(triton.grpc_url)
        try:
            results = await asyncio.gather(
                *(
                    client.infer("tiny_t5", _inputs(reference.ids(text), settings))
                    for text, settings in zip(TEXTS * 2, SETTINGS * 2, strict=True)
                )
            )
            stats = await client.get_inference_statistics("tiny_t5", as_json=True)
        finally:
            await client.close()
        executions = int(stats["model_stats"][0]["execution_count"])
        inferences = int(stats["model_stats"][0]["inference_count"])
        assert executions < inferences, "requests should have shared dynamic batches"
        return [r.as_numpy("output_ids")[0].tolist() for r in results]

    got = asyncio.run(run())
    for text, settings, tokens in zip(TEXTS * 2, SETTINGS * 2, got, strict=True):
        assert tokens == reference.generate(text, **settings), settings


def test_streaming_variant_sends_tokens_as_they_are_made(triton: LocalTriton, reference: Reference) -> None:
    received: queue.Queue = queue.Queue()
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    try:
        for index, settings in enumerate(
            [{"num_beams": 1, "max_new_tokens": 12}, {"num_beams": 4, "max_new_tokens": 10}]
        ):
            client.async_stream_infer(
                "tiny_t5_stream", _inputs(reference.ids(TEXTS[index]), settings), request_id=str(index)
            )
        chunks: dict[str, list[list[int]]] = {"0": [], "1": []}
        finished = 0
        while finished < 2:
            result, error = received.get(timeout=60)
            assert error is None, error
            response = result.get_response()
            chunks[response.id].append(result.as_numpy("output_ids")[0].tolist())
            if response.parameters["triton_final_response"].bool_param:
                finished += 1
    finally:
        client.stop_stream()
        client.close()
    greedy = reference.generate(TEXTS[0], num_beams=1, max_new_tokens=12)
    assert [c for c in chunks["0"] if c] == [[token] for token in greedy], "one token per response, in order"
    assert chunks["1"][-1] == reference.generate(TEXTS[1], num_beams=4, max_new_tokens=10)


def test_triton_rejects_bad_requests_and_keeps_serving(triton: LocalTriton, reference: Reference) -> None:
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    too_long = np.arange(3, 3 + MAX_INPUT_TOKENS + 5)
    with pytest.raises(Exception, match=f"at most {MAX_INPUT_TOKENS}"):
        client.infer("tiny_t5", _inputs(too_long, {}))
    with pytest.raises(Exception, match="num_beams"):
        client.infer("tiny_t5", _inputs(reference.ids(TEXTS[0]), {"num_beams": 0}))
    with pytest.raises(Exception, match="Extra inputs"):
        client.infer("tiny_t5", _inputs(reference.ids(TEXTS[0]), {"beams": 2}))
    ok = client.infer("tiny_t5", _inputs(reference.ids(TEXTS[0]), {"max_new_tokens": 4}))
    assert ok.as_numpy("output_ids").shape[1] <= 4


def test_http_summary_is_what_generate_writes(gateway_url: str, reference: Reference) -> None:
    body = {"texts": TEXTS[:3], "model": "tiny_t5", "max_new_tokens": 10, "num_beams": 4}
    response = httpx.post(f"{gateway_url}/v1/summarize", json=body, timeout=60)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["model"]["name"] == "tiny_t5" and payload["model"]["method"] == "abstractive"
    for text, result in zip(TEXTS[:3], payload["results"], strict=True):
        expected = reference.generate(text, max_new_tokens=10, num_beams=4)
        assert result["summary"] == reference.text(text, max_new_tokens=10, num_beams=4)
        assert result["tokens"] == len([t for t in expected if t != 1])
        assert result["method"] == "abstractive" and result["truncated"] is False and result["chunks"] == 1


def test_long_input_is_truncated_and_flagged_or_chunked(gateway_url: str, reference: Reference) -> None:
    truncated = httpx.post(
        f"{gateway_url}/v1/summarize",
        json={"texts": [LONG_TEXT], "model": "tiny_t5", "max_new_tokens": 8},
        timeout=60,
    ).json()["results"][0]
    assert truncated["truncated"] is True and truncated["chunks"] == 1
    assert truncated["summary"] == reference.text(LONG_TEXT, max_new_tokens=8)
    chunked = httpx.post(
        f"{gateway_url}/v1/summarize",
        json={"texts": [LONG_TEXT], "model": "tiny_t5", "max_new_tokens": 8, "long_input": "chunk"},
        timeout=60,
    ).json()["results"][0]
    assert chunked["chunks"] >= 2 and chunked["truncated"] is False


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"long_input": "skim"}, "long_input"),
        ({"num_beams": 0}, "num_beams"),
        ({"max_new_tokens": 100000}, "max_new_tokens"),
        ({"min_new_tokens": 9, "max_new_tokens": 3}, "must not exceed"),
    ],
)
def test_bad_settings_get_422(gateway_url: str, body: dict, message: str) -> None:
    response = httpx.post(
        f"{gateway_url}/v1/summarize", json={"texts": ["A day."], "model": "tiny_t5", **body}
    )
    assert response.status_code == 422 and message in response.text


def test_unknown_model_lists_installed_ones(gateway_url: str) -> None:
    response = httpx.post(f"{gateway_url}/v1/summarize", json={"texts": ["A day."], "model": "pegasus"})
    assert response.status_code == 404
    assert (
        "tiny_t5" in response.json()["error"]["message"] and EXTRACTIVE in response.json()["error"]["message"]
    )


def test_grpc_summarize_matches_http(gateway: Gateway) -> None:
    options = {"max_new_tokens": 9, "num_beams": 2, "model": "tiny_t5"}
    over_http = httpx.post(
        f"{gateway.http_url}/v1/summarize", json={"texts": TEXTS[:2], **options}, timeout=60
    )
    with GrpcClient(gateway.grpc_target) as client:
        over_grpc = client.summarize(TEXTS[:2], **options)
    assert [r.text for r in over_grpc.results] == [r["summary"] for r in over_http.json()["results"]]
    assert [r.tokens for r in over_grpc.results] == [r["tokens"] for r in over_http.json()["results"]]
    assert over_grpc.model.method == "abstractive"


def test_an_installed_abstractive_model_is_the_default() -> None:
    service = SummarizationService(triton=None, embedder=None, abstractive={"b": object(), "a": object()})  # type: ignore[arg-type, dict-item]
    assert service.default == "a" and service.models == ("a", "b")
    assert SummarizationService(triton=None, embedder=None).default == EXTRACTIVE  # type: ignore[arg-type]
    named = SummarizationService(triton=None, embedder=None, abstractive={"a": object()}, default=EXTRACTIVE)  # type: ignore[arg-type, dict-item]
    assert named.default == EXTRACTIVE


def _sse(response: httpx.Response) -> list[tuple[str, dict]]:
    events = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_summary_streams_over_server_sent_events(gateway_url: str) -> None:
    body = {"texts": [TEXTS[0]], "model": "tiny_t5", "max_new_tokens": 12}
    whole = httpx.post(f"{gateway_url}/v1/summarize", json=body, timeout=60).json()
    streamed = httpx.post(
        f"{gateway_url}/v1/summarize", json=body, headers={"accept": "text/event-stream"}, timeout=60
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = _sse(streamed)
    deltas = [data["text"] for name, data in events if name == "delta"]
    assert len(deltas) >= 2, "text should arrive in pieces"
    assert events[-1][0] == "summary" and events[-1][1]["results"] == whole["results"]
    assert "".join(deltas).strip() == whole["results"][0]["summary"]


def test_extractive_stream_is_one_event_and_streaming_takes_one_text(gateway_url: str) -> None:
    headers = {"accept": "text/event-stream"}
    events = _sse(
        httpx.post(f"{gateway_url}/v1/summarize", json={"texts": [LONG_TEXT]}, headers=headers, timeout=60)
    )
    assert [name for name, _ in events] == ["summary"] and events[0][1]["model"]["method"] == "extractive"
    two = httpx.post(f"{gateway_url}/v1/summarize", json={"texts": ["One.", "Two."]}, headers=headers)
    assert two.status_code == 422 and "streaming takes one text" in two.text


def test_a_gateway_with_only_a_summarizer_is_ready(
    serving_repository: Path, tmp_path: Path, local_triton
) -> None:
    repository = tmp_path / "repository"
    for name in ("tiny_t5", "tiny_t5_stream"):
        shutil.copytree(serving_repository / name, repository / name)
    with local_triton(repository) as triton:
        settings = GatewaySettings(triton_grpc_url=triton.grpc_url, model_repository=repository)

        async def check() -> str | None:
            services = Services.open(settings)
            try:
                return await services.readiness()
            finally:
                await services.close()

        assert asyncio.run(check()) is None


def test_pegasus_exports_for_gpu_with_parity(tmp_path: Path) -> None:
    folder = build_tiny_pegasus(tmp_path / "pegasus", journal_corpus())
    options = SummarizerExportOptions(
        model=str(folder), name="pegasus", repository=tmp_path / "repo", target="gpu"
    )
    report = export_summarizer(options)
    assert report.card.architecture == "pegasus" and report.greedy_tokens_equal
    for name in ("pegasus", "pegasus_stream"):
        config = read_model_config(tmp_path / "repo" / name)
        assert config.backend == "python"
        assert [group.kind for group in config.instance_group] == [config.instance_group[0].KIND_GPU]
