"""Batch work across processes: two `samo worker` processes on one procrastinate queue in a real
PostgreSQL (Debian's, started by the test), one SIGKILLed mid-batch; and the embedded SQLite store with
the gateway itself SIGKILLed mid-batch and restarted. Each time every line is answered exactly once, in
input order, and the usage ledger holds one row per line."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, SamoProcess, gateway_settings, journal_corpus, running_gateway
from tests.local_services import running_postgres, wait_until

LINES = 160


def batch_file(count: int) -> bytes:
    corpus = journal_corpus()
    lines = [
        {
            "custom_id": f"entry-{i}",
            "method": "POST",
            "url": "/v1/emotions",
            "body": {"texts": [f"{corpus[i % len(corpus)]} {corpus[(7 * i + 3) % len(corpus)]}"]},
        }
        for i in range(count)
    ]
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def start_batch(http: httpx.Client, count: int) -> str:
    uploaded = http.post(
        "/v1/files", files={"file": ("in.jsonl", batch_file(count))}, data={"purpose": "batch"}
    )
    assert uploaded.status_code == 200, uploaded.text
    created = http.post(
        "/v1/batches", json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/emotions"}
    )
    assert created.status_code == 200, created.text
    return created.json()["id"]


def completed(http: httpx.Client, batch_id: str) -> int:
    return http.get(f"/v1/batches/{batch_id}").json()["request_counts"]["completed"]


def finished(http: httpx.Client, batch_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while (batch := http.get(f"/v1/batches/{batch_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
    return batch


def assert_each_line_once(http: httpx.Client, batch: dict[str, Any], count: int) -> None:
    assert batch["status"] == "completed" and batch["error_file_id"] is None, batch
    assert batch["request_counts"] == {"total": count, "completed": count, "failed": 0}
    output = http.get(f"/v1/files/{batch['output_file_id']}/content").text.splitlines()
    assert [json.loads(line)["custom_id"] for line in output] == [f"entry-{i}" for i in range(count)]


def kill(process: SamoProcess) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.process.wait()


def test_a_worker_killed_mid_batch_loses_no_line_and_writes_none_twice(
    triton: LocalTriton,
    serving_repository: Path,
    samo_process: Callable[..., AbstractContextManager[SamoProcess]],
    tmp_path: Path,
) -> None:
    key = base64.b64encode(os.urandom(32)).decode()
    api_key = secrets.token_hex(24)
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(f"acme:{api_key}\n")
    with ExitStack() as stack:
        database = stack.enter_context(running_postgres())
        common = {
            "SAMO_DATABASE_URL": database,
            "SAMO_BATCH_KEY": key,
            "SAMO_BATCH_STALLED_AFTER_S": "3",
            "SAMO_BATCH_CHUNK_LINES": "8",
            "SAMO_BATCH_CONCURRENCY": "2",
        }
        # The gateway takes requests only; the two workers share procrastinate's queue.
        settings = gateway_settings(
            triton,
            model_repository=serving_repository,
            health_probe_interval_s=QUIET_PROBES_S,
            database_url=database,
            batch_key=key,
            batch_worker=False,
            api_keys_file=keys_file,  # with a database the gateway takes credentials only
        )
        gateway = stack.enter_context(running_gateway(settings))
        environment: dict[str, str | None] = {
            **common,
            "SAMO_TRITON_GRPC_URL": triton.grpc_url,
            "SAMO_MODEL_REPOSITORY": str(serving_repository),
            "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),
        }
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        workers = [
            stack.enter_context(
                samo_process(
                    "worker",
                    env=environment,
                    log=log,
                    ready=lambda _, log=log: "batch worker: running" in log.read_text(),
                )
            )
            for log in logs
        ]
        http = stack.enter_context(
            httpx.Client(
                base_url=gateway.http_url, timeout=30, headers={"authorization": f"Bearer {api_key}"}
            )
        )
        batch_id = start_batch(http, LINES)
        assert wait_until(lambda: completed(http, batch_id) >= 24, timeout_s=60)
        kill(workers[0])  # mid-batch: it holds jobs, and a line in flight
        left = completed(http, batch_id)
        assert left < LINES
        batch = finished(http, batch_id, timeout_s=90)
        assert_each_line_once(http, batch, LINES)
        # The survivor found the dead worker's jobs (its heartbeat stopped) and put them back.
        assert "jobs of dead workers put back in the queue" in logs[1].read_text()
        engine = create_engine(database)

        def ledger() -> tuple[int, int]:
            query = "SELECT count(*), count(DISTINCT request_id) FROM usage WHERE request_id LIKE :batch"
            with engine.connect() as connection:
                row = connection.execute(text(query), {"batch": f"{batch_id}-%"}).one()
            return int(row[0]), int(row[1])

        try:
            # One usage row per line, the killed worker's lines included (rows are written in batches
            # every 0.25 s by each process).
            ok = wait_until(lambda: ledger() == (LINES, LINES), timeout_s=5)
            assert ok, ledger()
        finally:
            engine.dispose()


def test_the_embedded_gateway_killed_mid_batch_finishes_it_after_a_restart(
    triton: LocalTriton,
    serving_repository: Path,
    samo_process: Callable[..., AbstractContextManager[SamoProcess]],
    tmp_path: Path,
) -> None:
    environment: dict[str, str | None] = {
        "SAMO_TRITON_GRPC_URL": triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(serving_repository),
        "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),
        "SAMO_BATCH_DIR": str(tmp_path / "store"),
        "SAMO_BATCH_CHUNK_LINES": "4",
        "SAMO_BATCH_CONCURRENCY": "2",
    }
    with (
        samo_process("gateway", env=environment, ready="/health/live") as first,
        httpx.Client(base_url=first.http_url, timeout=30) as http,
    ):
        batch_id = start_batch(http, LINES)
        assert wait_until(lambda: completed(http, batch_id) >= 16, timeout_s=60)
        kill(first)
    with (
        samo_process("gateway", env=environment, ready="/health/live", port=first.port) as second,
        httpx.Client(base_url=second.http_url, timeout=30) as http,
    ):
        done_before = completed(http, batch_id)
        assert done_before < LINES
        assert_each_line_once(http, finished(http, batch_id, timeout_s=90), LINES)
