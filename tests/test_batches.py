"""Batch jobs against the session's real Triton and gateway (embedded SQLite store): the OpenAI SDK's
files and batches calls, answers equal to the synchronous ones, malformed lines and unusable files,
cancel, expiry, retrying failed lines, progress events, webhooks, tenants and encryption at rest.
The queue across processes (PostgreSQL, SIGKILL) is tests/test_batch_workers.py."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.server
import json
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import openai
import pytest

from gateway.context import RequestContext
from gateway.errors import SamoError
from gateway.security.principal import Principal
from gateway.security.scopes import Scope
from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, Gateway, gateway_settings, journal_corpus, running_gateway
from tests.speech import JFK_WAV


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def emotion_line(custom_id: str, texts: list[str], **options: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/emotions",
        "body": {"texts": texts, **options},
    }


def texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    corpus = journal_corpus()
    return [" ".join(rng.sample(corpus, 2)) for _ in range(count)]


def assert_same_emotions(batched: dict[str, Any], alone: dict[str, Any]) -> None:
    """Equal answers: the same fields, labels and tokens; scores equal up to the float rounding that
    another dynamic batch's padding gives (as tests/test_gateway_api.py compares concurrent answers)."""
    assert batched.keys() == alone.keys() and batched["model"] == alone["model"]
    assert len(batched["results"]) == len(alone["results"])
    for got, expected in zip(batched["results"], alone["results"], strict=True):
        assert (got["tokens"], got["truncated"]) == (expected["tokens"], expected["truncated"])
        assert [x["label"] for x in got["labels"]] == [x["label"] for x in expected["labels"]]
        assert [x["score"] for x in got["labels"]] == pytest.approx(
            [x["score"] for x in expected["labels"]], abs=1e-5
        )
        assert got["scores"] == pytest.approx(expected["scores"], abs=1e-5)
        assert got.keys() == expected.keys()


@pytest.fixture()
def client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{gateway.http_url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def wait_for(client: openai.OpenAI, batch_id: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}: {batch.request_counts}"
        time.sleep(0.2)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_the_openai_sdk_runs_a_batch_whose_answers_equal_the_synchronous_ones(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    entries = texts(24, seed=1)
    lines = [emotion_line(f"entry-{i}", [text], top_k=3) for i, text in enumerate(entries)]
    lines.insert(5, {"custom_id": "no-body", "method": "POST", "url": "/v1/emotions"})
    raw = jsonl(lines).replace(b"\n", b"\n{not json\n", 1)  # line 2: malformed
    uploaded = client.files.create(file=("entries.jsonl", raw), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(raw)
    assert client.files.retrieve(uploaded.id).filename == "entries.jsonl"
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/emotions",  # pyright: ignore[reportArgumentType]  # SAMO's endpoints
        completion_window="24h",
        metadata={"job": "reanalysis"},
    )
    assert batch.status in ("validating", "in_progress") and batch.metadata == {"job": "reanalysis"}
    done = wait_for(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        26,
        24,
        2,
    )

    output = read_lines(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"entry-{i}" for i in range(24)]  # input order
    for line, text in zip(output, entries, strict=True):
        synchronous = http.post("/v1/emotions", json={"texts": [text], "top_k": 3})
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert_same_emotions(line["response"]["body"], synchronous.json())
    errors = read_lines(client, done.error_file_id)
    assert [(e["custom_id"], e["error"]["line"], e["error"]["code"]) for e in errors] == [
        (None, 2, "invalid_json_line"),
        ("no-body", 7, "invalid_request"),
    ]
    assert errors[1]["error"]["message"] == "line 7: body: field required"

    listed = client.batches.list(limit=1)
    assert listed.data[0].id == batch.id
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve(batch.id)  # deleted with its input file, outputs included
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(done.output_file_id or "")


def upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> str:
    return client.files.create(file=("lines.jsonl", jsonl(lines)), purpose="batch").id


def create(client: openai.OpenAI, file_id: str, endpoint: str = "/v1/emotions", **extra: Any) -> Any:
    return client.batches.create(
        input_file_id=file_id,
        endpoint=endpoint,  # pyright: ignore[reportArgumentType]  # SAMO's endpoints
        completion_window="24h",
        extra_body=extra or None,
    )


def test_an_audio_line_refers_to_an_uploaded_recording(client: openai.OpenAI, http: httpx.Client) -> None:
    audio = client.files.create(file=("jfk.wav", JFK_WAV.read_bytes()), purpose="audio")  # pyright: ignore[reportArgumentType]
    line = {
        "custom_id": "speech",
        "method": "POST",
        "url": "/v1/audio/transcriptions",
        "body": {"file_id": audio.id, "response_format": "verbose_json"},
    }
    batch = wait_for(client, create(client, upload(client, [line]), "/v1/audio/transcriptions").id, 120)
    assert batch.status == "completed", read_lines(client, batch.error_file_id)
    [output] = read_lines(client, batch.output_file_id)
    synchronous = http.post(
        "/v1/audio/transcriptions",
        files={"file": ("jfk.wav", JFK_WAV.read_bytes(), "audio/wav")},
        data={"response_format": "verbose_json"},
        timeout=120,
    )
    assert output["custom_id"] == "speech"
    assert output["response"]["body"]["text"] == synchronous.json()["text"]
    assert "ask not what your country" in output["response"]["body"]["text"].lower()


@pytest.mark.parametrize(
    ("content", "endpoint", "message"),
    [
        (
            b"\xff\xfe not utf-8",
            "/v1/emotions",
            "input file: not UTF-8 (byte 0); send JSONL, one request per line",
        ),
        (b"\n\n", "/v1/emotions", "input file: no lines; send JSONL, one request per line"),
        (
            b"[1, 2]\n",
            "/v1/emotions",
            "input file: no valid line; line 1: not a JSON object (custom_id, method, url, body)",
        ),
        (
            jsonl([emotion_line("a", ["x"]), emotion_line("a", ["y"])]),
            "/v1/emotions",
            "input file: line 2 repeats the `custom_id` of line 1; each line needs its own",
        ),
        (
            jsonl([emotion_line("a", ["x"])]),
            "/v1/translate",
            "endpoint: one of /v1/emotions, /v1/transcribe, /v1/audio/transcriptions, /v1/summarize, "
            "/v1/journal, not `/v1/translate`",
        ),
        (
            jsonl([emotion_line("a", ["x"])]),
            "/v1/summarize",
            "input file: no valid line; line 1: url `/v1/emotions` is not the batch's endpoint `/v1/summarize`",
        ),
    ],
    ids=["not-utf8", "empty", "not-jsonl", "repeated-id", "unknown-endpoint", "other-endpoint"],
)
def test_a_file_that_cannot_make_a_batch_is_refused_at_creation(
    http: httpx.Client, content: bytes, endpoint: str, message: str
) -> None:
    file_id = http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"}).json()[
        "id"
    ]
    response = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": endpoint})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_input"
    assert response.json()["error"]["message"] == message
    assert http.get("/health/live").status_code == 200


def test_files_refused_before_they_are_stored(http: httpx.Client) -> None:
    wrong = http.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "fine-tune"})
    assert wrong.status_code == 422
    assert (
        wrong.json()["error"]["message"]
        == "purpose: `batch` (a JSONL input file) or `audio` (a recording), not `fine-tune`"
    )
    audio = http.post("/v1/files", files={"file": ("a.wav", JFK_WAV.read_bytes())}, data={"purpose": "audio"})
    refused = http.post("/v1/batches", json={"input_file_id": audio.json()["id"], "endpoint": "/v1/emotions"})
    assert refused.status_code == 422 and "has purpose `audio`" in refused.json()["error"]["message"]
    missing = http.post("/v1/batches", json={"input_file_id": "file-nothing", "endpoint": "/v1/emotions"})
    assert (
        missing.status_code == 404 and missing.json()["error"]["message"] == "no file with ID `file-nothing`"
    )


def test_a_batch_whose_every_line_failed_is_failed_not_completed(client: openai.OpenAI) -> None:
    lines = [emotion_line("empty", []), emotion_line("bad-k", ["fine"], top_k=-3)]
    batch = wait_for(client, create(client, upload(client, lines)).id)
    assert batch.status == "failed" and batch.output_file_id is None
    errors = read_lines(client, batch.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"], e["error"]["code"]) for e in errors] == [
        ("empty", 422, "invalid_input"),
        ("bad-k", 422, "invalid_input"),
    ]


def sse_events(http: httpx.Client, batch_id: str) -> Iterator[dict[str, Any]]:
    with http.stream("GET", f"/v1/batches/{batch_id}/events", timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                yield json.loads(line.removeprefix("data: "))


def test_cancel_keeps_finished_lines_and_their_failures_retry_as_a_new_batch(
    client: openai.OpenAI, http: httpx.Client
) -> None:
    entries = texts(300, seed=2)
    lines = [emotion_line(f"n{i}", [text]) for i, text in enumerate(entries)]
    batch = create(client, upload(client, lines))
    seen = []
    for update in sse_events(http, batch.id):
        seen.append(update)
        if update["request_counts"]["completed"] >= 20 and update["status"] == "in_progress":
            cancelled_at = time.monotonic()
            cancelling = client.batches.cancel(batch.id)
            assert cancelling.status == "cancelling" and cancelling.request_counts is not None
            answered_at_cancel = cancelling.request_counts.completed
    assert seen[-1]["status"] == "cancelled"
    # Cancelled within seconds (the bound leaves room for a machine shared with other test runs).
    assert time.monotonic() - cancelled_at < 15
    counts = [u["request_counts"]["completed"] for u in seen]
    assert counts == sorted(counts)  # progress only grows
    done = client.batches.retrieve(batch.id)
    output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert done.request_counts is not None and done.request_counts.completed == len(output) >= 20
    # No line starts after the cancel: only the lines in flight then (at most the default
    # `SAMO_BATCH_CONCURRENCY`, 4) still finish.
    assert len(output) <= answered_at_cancel + 4
    assert len(output) < 300 and len(output) + len(errors) == 300
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"}
    finished = {line["custom_id"] for line in output}
    assert [line["custom_id"] for line in output + errors] != [] and finished.isdisjoint(
        e["custom_id"] for e in errors
    )

    # Retry failed lines: a new batch from the cancelled batch's error file runs those lines alone.
    retried = wait_for(client, create(client, done.error_file_id).id)
    assert retried.status == "completed" and retried.error_file_id is None
    again = read_lines(client, retried.output_file_id)
    assert [line["custom_id"] for line in again] == [e["custom_id"] for e in errors]
    assert finished | {line["custom_id"] for line in again} == {f"n{i}" for i in range(300)}


def test_a_batch_past_its_completion_window_expires_with_its_output_kept(
    client: openai.OpenAI, gateway: Gateway
) -> None:
    entries = texts(200, seed=3)
    batch = create(client, upload(client, [emotion_line(f"e{i}", [t]) for i, t in enumerate(entries)]))
    while client.batches.retrieve(batch.id).request_counts.completed < 10:  # pyright: ignore[reportOptionalMemberAccess]
        time.sleep(0.05)
    # The window closes now: the batch's deadline moved to the past, as the clock would move it.
    assert gateway.app is not None
    database = gateway.app.state.batches.settings.batch_dir / "batches.db"
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE batches SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (batch.id,)
        )
    done = wait_for(client, batch.id, 20)
    assert done.status == "expired" and done.expired_at is not None
    output, errors = read_lines(client, done.output_file_id), read_lines(client, done.error_file_id)
    assert len(output) >= 10 and len(output) + len(errors) == 200
    assert {e["error"]["code"] for e in errors} == {"batch_expired"}


WEBHOOK_SECRET = "whsec-test-" + "k" * 24
DIARY = "I told nobody about the letter from my sister"  # plaintext that must never be stored


@pytest.fixture(scope="module")
def keys() -> dict[str, str]:
    return {name: secrets.token_hex(24) for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def keyed(
    triton: LocalTriton,
    serving_repository: Path,
    keys: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    """A gateway with two tenants (each keys-file key is its own tenant) and signed webhooks."""
    key_file = tmp_path_factory.mktemp("batch-keys") / "keys"
    key_file.write_text("".join(f"{name}:{key}\n" for name, key in keys.items()))
    settings = gateway_settings(
        triton,
        model_repository=serving_repository,
        default_summarizer="extractive",
        health_probe_interval_s=QUIET_PROBES_S,
        api_keys_file=key_file,
        batch_webhook_secret=WEBHOOK_SECRET,
        # Carol's tenant may make 4 requests a minute: her batch's later lines meet a real 429.
        tenant_quotas={"carol": {"requests": "4/minute"}},
        batch_max_attempts=2,
        batch_retry_base_s=0.05,
    )
    with running_gateway(settings) as running:
        yield running


def sdk(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.http_url}/v1", api_key=key, max_retries=0)


def test_a_tenant_sees_only_its_own_files_and_batches(keyed: Gateway, keys: dict[str, str]) -> None:
    with sdk(keyed, keys["alice"]) as alice, sdk(keyed, keys["bob"]) as bob:
        audio = alice.files.create(file=("a.wav", JFK_WAV.read_bytes()), purpose="audio")  # pyright: ignore[reportArgumentType]
        file_id = upload(alice, [emotion_line("one", ["A quiet walk by the river."])])
        batch = create(alice, file_id)
        assert [f.id for f in bob.files.list()] == [] and [b.id for b in bob.batches.list()] == []
        for call in (
            lambda: bob.files.retrieve(file_id),
            lambda: bob.files.content(file_id),
            lambda: bob.files.delete(file_id),
            lambda: bob.batches.retrieve(batch.id),
            lambda: bob.batches.cancel(batch.id),
            lambda: create(bob, file_id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        # Bob's line cannot reach Alice's recording either.
        line = {"custom_id": "x", "method": "POST", "url": "/v1/transcribe", "body": {"file_id": audio.id}}
        with pytest.raises(
            openai.UnprocessableEntityError, match=r"body\.file_id: no audio file with that ID"
        ):
            create(bob, upload(bob, [line]), "/v1/transcribe")
        assert wait_for(alice, batch.id).status == "completed"
        assert {f.id for f in alice.files.list()} >= {file_id, audio.id}


def test_the_batch_scope_gates_every_route(keyed: Gateway) -> None:
    assert keyed.app is not None
    service = keyed.app.state.batches
    caller = Principal("reader", True, tenant="t", scopes=frozenset({Scope.EMOTIONS}))
    with pytest.raises(SamoError, match="lacks the `batch` scope"):
        asyncio.run(service.files(RequestContext(principal=caller), None, None, 10))
    with pytest.raises(SamoError, match="lacks the `batch` scope"):
        asyncio.run(
            service.create(
                RequestContext(principal=caller), {"input_file_id": "f", "endpoint": "/v1/emotions"}
            )
        )


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records each webhook; answers 500 to the first (so that it is tried again), 204 after."""

    calls: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:  # http.server's name
        body = self.rfile.read(int(self.headers["content-length"]))
        Receiver.calls.append((dict(self.headers.items()), body))
        self.send_response(500 if len(Receiver.calls) == 1 else 204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def test_webhook_signed_retried_and_contents_encrypted_at_rest(keyed: Gateway, keys: dict[str, str]) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/samo"
    try:
        with sdk(keyed, keys["alice"]) as alice:
            file_id = upload(alice, [emotion_line("secret", [DIARY])])
            batch = create(alice, file_id, webhook_url=url)
            assert wait_for(alice, batch.id).status == "completed"
            deadline = time.monotonic() + 30
            while len(Receiver.calls) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            output = alice.files.content(alice.batches.retrieve(batch.id).output_file_id or "").content
    finally:
        server.shutdown()
    assert len(Receiver.calls) == 2  # a 500, then tried again after the backoff
    (first, _), (headers, body) = Receiver.calls
    assert headers["webhook-id"] == first["webhook-id"] == f"{batch.id}.completed"  # the idempotency key
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(WEBHOOK_SECRET.encode(), signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"
    event = json.loads(body)
    assert (event["type"], event["data"]["id"], event["batch"]["request_counts"]["completed"]) == (
        "batch.completed",
        batch.id,
        1,
    )
    assert DIARY.encode() not in body

    # At rest: the database holds no plaintext of the entry, its output or the webhook URL.
    assert keyed.app is not None
    folder: Path = keyed.app.state.batches.settings.batch_dir
    stored = b"".join(path.read_bytes() for path in folder.glob("batches.db*"))
    assert b'"scores"' in output and DIARY.encode() in jsonl([emotion_line("secret", [DIARY])])
    for plaintext in (DIARY.encode(), b'"scores"', b"/hooks/samo", b"custom_id"):
        assert plaintext not in stored


def test_transient_errors_are_tried_again_and_permanent_ones_are_not(
    keyed: Gateway, keys: dict[str, str]
) -> None:
    assert keyed.app is not None
    service = keyed.app.state.batches
    carol = Principal("carol", True, tenant="carol", scopes=frozenset(Scope))
    lines = [
        emotion_line("empty", []),
        emotion_line("b", ["fine"]),
        emotion_line("c", ["ok"]),
        emotion_line("d", ["so"]),
    ]
    with sdk(keyed, keys["carol"]) as client:  # requests 1 and 2 of her 4 a minute
        batch = create(client, upload(client, lines))
    # Her quota is spent after line 2, so reads go around the HTTP quota, as her principal.
    deadline = time.monotonic() + 30
    while (done := asyncio.run(service.batch(RequestContext(principal=carol), batch.id))).status not in (
        "completed",
        "failed",
        "expired",
        "cancelled",
    ):  # in_progress, then finalizing
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert done.status == "completed"
    errors, _ = asyncio.run(service.content(RequestContext(principal=carol), done.error_file_id))
    found = [json.loads(line) for line in errors.splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"], e["error"]["code"]) for e in found] == [
        ("empty", 422, "invalid_input"),  # the line's own fault: at once
        ("c", 429, "rate_limited"),  # transient: tried again after a backoff, then given up
        ("d", 429, "rate_limited"),
    ]
    metrics = httpx.get(
        f"{keyed.http_url}/metrics", headers={"authorization": f"Bearer {keys['alice']}"}
    ).text
    assert 'samo_batch_line_retries_total{error="rate_limited"} 2.0' in metrics
    assert 'samo_batch_line_retries_total{error="invalid_input"}' not in metrics
