"""Batch work across processes, killed with SIGKILL mid-batch. PostgreSQL (Debian's, started once for
the module): a gateway and a `samo worker` on one procrastinate queue, the worker killed, then the
gateway, which is restarted. SQLite (the embedded store): the gateway killed and restarted on the same
folder. Each time every line is answered exactly once, in input order, and with PostgreSQL the usage
ledger holds one row per line."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from samo.triton.local_server import LocalTriton
from tests.conftest import QUIET_PROBES_S, SamoProcess, journal_corpus
from tests.local_services import running_postgres, wait_until

ROOT = Path(__file__).resolve().parents[1]
LINES = 48
"""Lines of the SQLite test's batch: enough that the gateway is killed with most of them pending."""
PG_LINES = 96
"""Lines of the PostgreSQL test's batch, which outlives two kills."""


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


def finished(
    http: httpx.Client, batch_id: str, timeout_s: float, logs: tuple[Path, ...] = ()
) -> dict[str, Any]:
    """The batch once ended; past `timeout_s`, a failure showing it and the last lines of `logs` (the
    processes' logs name lines and jobs, never their content)."""
    deadline = time.monotonic() + timeout_s
    while (batch := http.get(f"/v1/batches/{batch_id}").json())["status"] not in ("completed", "failed"):
        if time.monotonic() > deadline:
            tails = {log.name: log.read_text().splitlines()[-15:] for log in logs if log.exists()}
            raise AssertionError(json.dumps({"batch": batch, "logs": tails}, indent=1))
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


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """One PostgreSQL for the module (Debian's, started here)."""
    with running_postgres() as url:
        yield url


def ledger_rows(database: str, batch_id: str) -> tuple[int, int]:
    """Usage rows of the batch's lines: (rows, distinct request IDs)."""
    engine = create_engine(database)
    try:
        query = "SELECT count(*), count(DISTINCT request_id) FROM usage WHERE request_id LIKE :batch"
        with engine.connect() as connection:
            row = connection.execute(text(query), {"batch": f"{batch_id}-%"}).one()
        return int(row[0]), int(row[1])
    finally:
        engine.dispose()


def queue_depth(database: str) -> int:
    """What KEDA's postgresql trigger (k8s/base/worker/scaledobject.yaml) reads to scale the workers."""
    manifest = next(yaml.safe_load_all((ROOT / "k8s/base/worker/scaledobject.yaml").read_text()))
    (trigger,) = manifest["spec"]["triggers"]
    engine = create_engine(database)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text(trigger["metadata"]["query"])).scalar_one())
    finally:
        engine.dispose()


def postgres_environment(
    triton: LocalTriton, repository: Path, database: str, folder: Path, *, concurrency: int
) -> tuple[dict[str, str | None], dict[str, str]]:
    """The processes' settings on the module's PostgreSQL (with a database the gateway takes
    credentials only: one key, written in `folder`), and the headers that carry the key."""
    api_key = secrets.token_hex(24)
    keys_file = folder / "api-keys"
    keys_file.write_text(f"acme:{api_key}\n")
    environment: dict[str, str | None] = {
        "SAMO_TRITON_GRPC_URL": triton.grpc_url,
        "SAMO_MODEL_REPOSITORY": str(repository),
        "SAMO_HEALTH_PROBE_INTERVAL_S": str(QUIET_PROBES_S),
        "SAMO_DATABASE_URL": database,
        "SAMO_API_KEYS_FILE": str(keys_file),
        "SAMO_BATCH_KEY": base64.b64encode(os.urandom(32)).decode(),
        "SAMO_BATCH_STALLED_AFTER_S": "2",
        "SAMO_BATCH_CHUNK_LINES": "4",
        "SAMO_BATCH_CONCURRENCY": str(concurrency),
    }
    return environment, {"authorization": f"Bearer {api_key}"}


def test_on_postgresql_a_worker_then_the_gateway_killed_mid_batch_lose_no_line_and_write_none_twice(
    triton: LocalTriton,
    serving_repository: Path,
    samo_process: Callable[..., AbstractContextManager[SamoProcess]],
    postgres: str,
    tmp_path: Path,
) -> None:
    """A gateway and a `samo worker` share procrastinate's queue; the worker is SIGKILLed mid-batch,
    then the gateway, which is restarted: every line answered once, the dead processes' jobs put back."""
    environment, headers = postgres_environment(triton, serving_repository, postgres, tmp_path, concurrency=2)
    logs = {name: tmp_path / f"{name}.log" for name in ("gateway", "worker", "restarted")}
    with ExitStack() as stack:
        gateway = stack.enter_context(
            samo_process("gateway", env=environment, log=logs["gateway"], ready="/health/live")
        )
        worker = stack.enter_context(
            samo_process(
                "worker",
                env=environment,
                log=logs["worker"],
                ready=lambda _: "batch worker: running" in logs["worker"].read_text(),
            )
        )
        http = stack.enter_context(httpx.Client(base_url=gateway.http_url, timeout=30, headers=headers))
        batch_id = start_batch(http, PG_LINES)
        assert wait_until(lambda: completed(http, batch_id) >= 8, timeout_s=60)
        assert queue_depth(postgres) > 0  # the workers' autoscaler sees the batch's jobs
        kill(worker)  # mid-batch: it holds jobs, and lines in flight
        at_kill = completed(http, batch_id)
        assert wait_until(lambda: completed(http, batch_id) >= at_kill + 8, timeout_s=60)
        kill(gateway)  # the gateway too, holding jobs of its own
    with (
        samo_process(
            "gateway", env=environment, log=logs["restarted"], ready="/health/live", port=gateway.port
        ) as restarted,
        httpx.Client(base_url=restarted.http_url, timeout=30, headers=headers) as http,
    ):
        assert completed(http, batch_id) < PG_LINES
        batch = finished(http, batch_id, timeout_s=90, logs=tuple(logs.values()))
        assert_each_line_once(http, batch, PG_LINES)
    # The restarted gateway found the dead processes' jobs (their heartbeats stopped) and put them back.
    assert "jobs of dead workers put back in the queue" in logs["restarted"].read_text()
    # One usage row per line, the killed processes' lines included (each process writes its rows in
    # batches every 0.25 s, before the line's result).
    assert ledger_rows(postgres, batch_id) == (PG_LINES, PG_LINES)
    assert queue_depth(postgres) == 0  # and scales them to zero once it is done


def test_on_postgresql_lines_whose_jobs_failed_for_good_are_queued_again(
    triton: LocalTriton,
    serving_repository: Path,
    samo_process: Callable[..., AbstractContextManager[SamoProcess]],
    postgres: str,
    tmp_path: Path,
) -> None:
    """A batch whose jobs are gone (procrastinate marked them failed) while lines are pending is not
    stuck: after `SAMO_BATCH_STALLED_AFTER_S` without a job, the maintenance loop queues its pending
    lines again, and every line is answered once."""
    environment, headers = postgres_environment(triton, serving_repository, postgres, tmp_path, concurrency=1)
    log = tmp_path / "gateway.log"
    with (
        samo_process("gateway", env=environment, log=log, ready="/health/live") as gateway,
        httpx.Client(base_url=gateway.http_url, timeout=30, headers=headers) as http,
    ):
        batch_id = start_batch(http, 24)
        engine = create_engine(postgres)
        try:
            with engine.begin() as connection:
                failed = connection.execute(
                    text(
                        "UPDATE procrastinate_jobs SET status = 'failed' WHERE status = 'todo' "
                        "AND args->>'batch_id' = :batch"
                    ),
                    {"batch": batch_id},
                ).rowcount
        finally:
            engine.dispose()
        assert failed > 0  # jobs were still waiting: their lines now have none
        assert_each_line_once(http, finished(http, batch_id, timeout_s=60, logs=(log,)), 24)
    assert "pending lines had no job; queued again" in log.read_text()


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
        assert wait_until(lambda: completed(http, batch_id) >= 8, timeout_s=60)
        kill(first)
    with (
        samo_process("gateway", env=environment, ready="/health/live", port=first.port) as second,
        httpx.Client(base_url=second.http_url, timeout=30) as http,
    ):
        assert completed(http, batch_id) < LINES
        assert_each_line_once(http, finished(http, batch_id, timeout_s=90), LINES)
