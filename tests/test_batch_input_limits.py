"""A batch's input file within its limits: too many lines fails the batch at creation, a line over the
size limit is reported with its number and the others run, and unusable files say what is wrong; a file
over the size limit is refused (413), a tenant's batches beyond the active limit too (429), and files
past their retention are deleted with what was derived from them. The gateway of the last three has no
Triton (its lines never reach a model): no stack is started."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.batches import maintenance
from gateway.batches.parse import Limits, MalformedLine, ValidLine, parse_input
from gateway.errors import SamoError
from load_tests.processes import free_port
from samo.settings import GatewaySettings
from tests.conftest import QUIET_PROBES_S, gateway_settings, running_gateway
from tests.local_services import wait_until

ENDPOINT = "/v1/emotions"


def line(custom_id: str, text: str = "I slept well and the morning felt calm.") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": {"texts": [text]}})


def parse(lines: list[str], limits: Limits = Limits(max_lines=10, max_line_bytes=1000)) -> list:
    return parse_input("\n".join(lines).encode(), ENDPOINT, limits, None)


def test_more_lines_than_the_limit_fail_the_file_naming_the_setting() -> None:
    with pytest.raises(SamoError) as refused:
        parse([line(f"entry-{i}") for i in range(4)], Limits(max_lines=3, max_line_bytes=1000))
    assert "more than 3 lines" in str(refused.value) and "SAMO_BATCH_MAX_LINES" in str(refused.value)
    assert len(parse([line(f"entry-{i}") for i in range(3)], Limits(max_lines=3, max_line_bytes=1000))) == 3


def test_a_line_over_the_size_limit_is_reported_by_number_without_its_text() -> None:
    long_entry = "Today I wrote about everything that happened at work. " * 40
    parsed = parse([line("short"), line("long", long_entry), line("after")])
    assert [type(item) for item in parsed] == [ValidLine, MalformedLine, ValidLine]
    too_large = parsed[1]
    assert isinstance(too_large, MalformedLine)
    assert (too_large.number, too_large.code) == (2, "line_too_large")
    assert "work" not in too_large.message  # no journal text in what the error file says


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\xff\xfe not text", "not UTF-8"),
        (b"\n\n", "no lines"),
        (b"not json\n{}", "no valid line"),
        ((line("same") + "\n" + line("same")).encode(), "repeats the `custom_id` of line 1"),
    ],
)
def test_unusable_files_fail_at_creation_with_what_is_wrong(data: bytes, says: str) -> None:
    with pytest.raises(SamoError) as refused:
        parse_input(data, ENDPOINT, Limits(max_lines=10, max_line_bytes=1000), None)
    assert says in str(refused.value)


MAX_FILE_BYTES = 4096


def limits_gateway(**overrides: object) -> GatewaySettings:
    """Settings of a gateway whose Triton answers nothing (a port nobody listens on): its tests never
    reach a model."""
    return gateway_settings(
        None,
        triton_grpc_url=f"127.0.0.1:{free_port()}",
        health_probe_interval_s=QUIET_PROBES_S,
        batch_max_file_bytes=MAX_FILE_BYTES,
        **overrides,
    )


@pytest.fixture(scope="module")
def limited() -> Iterator[httpx.Client]:
    """Small limits, and no batch worker: a batch stays `in_progress` until it is deleted."""
    settings = limits_gateway(batch_max_active=2, batch_worker=False)
    with running_gateway(settings), httpx.Client(base_url=f"http://127.0.0.1:{settings.port}") as http:
        yield http


@pytest.fixture(scope="module")
def retained() -> Iterator[tuple[httpx.Client, Path]]:
    """A batch worker whose maintenance loop looks for files past their retention every 0.2 s, not
    every minute."""
    settings = limits_gateway()
    with (
        pytest.MonkeyPatch.context() as patch,
        running_gateway(settings),
        httpx.Client(base_url=f"http://127.0.0.1:{settings.port}") as http,
    ):
        patch.setattr(maintenance, "RETENTION_EVERY_S", 0.2)
        yield http, settings.batch_dir / "batches.db"


def upload(http: httpx.Client, content: bytes) -> httpx.Response:
    return http.post("/v1/files", files={"file": ("in.jsonl", content)}, data={"purpose": "batch"})


def test_a_file_over_the_size_limit_is_refused_with_413_naming_the_setting(limited: httpx.Client) -> None:
    http = limited
    entries = [line(f"entry-{i}") for i in range(200)]
    content = "\n".join(entries).encode()
    refused = upload(http, content[: MAX_FILE_BYTES + 1])
    assert refused.status_code == 413, refused.text
    assert (
        refused.json()["error"]["message"] == f"file: over {MAX_FILE_BYTES} bytes (SAMO_BATCH_MAX_FILE_BYTES)"
    )
    assert "slept" not in refused.text
    assert http.get("/v1/files").json()["data"] == []  # nothing stored
    assert upload(http, content[:MAX_FILE_BYTES]).status_code == 200  # at the limit: taken


def test_a_tenant_beyond_its_active_batches_gets_429_until_one_ends(limited: httpx.Client) -> None:
    http = limited
    files = [upload(http, line(name).encode()).json()["id"] for name in ("a", "b")]
    for file_id in files:
        created = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT})
        assert created.status_code == 200, created.text
    refused = http.post("/v1/batches", json={"input_file_id": files[0], "endpoint": ENDPOINT})
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["message"] == (
        "this tenant has 2 batches not yet ended (SAMO_BATCH_MAX_ACTIVE); wait for one to end or cancel one"
    )
    assert refused.headers["retry-after"] == "60"
    # Deleting an input file deletes its batch: room for one more.
    assert http.delete(f"/v1/files/{files[0]}").status_code == 200
    again = http.post("/v1/batches", json={"input_file_id": files[1], "endpoint": ENDPOINT})
    assert again.status_code == 200, again.text
    assert http.delete(f"/v1/files/{files[1]}").status_code == 200


def rows(database: Path, batch_id: str, *file_ids: str) -> tuple[int, int, int]:
    """Rows left of a batch: (batches, its lines, the files named)."""
    with sqlite3.connect(database) as connection:
        found = [
            connection.execute(query, args).fetchone()[0]
            for query, args in (
                ("SELECT count(*) FROM batches WHERE id = ?", (batch_id,)),
                ("SELECT count(*) FROM batch_lines WHERE batch_id = ?", (batch_id,)),
                (f"SELECT count(*) FROM batch_files WHERE id IN ({','.join('?' * len(file_ids))})", file_ids),
            )
        ]
    return found[0], found[1], found[2]


def test_files_past_their_retention_are_deleted_with_their_batches_lines_and_outputs(
    retained: tuple[httpx.Client, Path],
) -> None:
    http, database = retained
    # One line the model never sees (an empty list: 422 at once): the batch fails with an error file.
    empty = json.dumps({"custom_id": "e", "method": "POST", "url": ENDPOINT, "body": {"texts": []}})
    file_id = upload(http, empty.encode()).json()["id"]
    batch_id = http.post("/v1/batches", json={"input_file_id": file_id, "endpoint": ENDPOINT}).json()["id"]
    assert wait_until(lambda: http.get(f"/v1/batches/{batch_id}").json()["status"] == "failed")
    error_file = http.get(f"/v1/batches/{batch_id}").json()["error_file_id"]
    kept = upload(http, line("kept").encode()).json()["id"]
    assert rows(database, batch_id, file_id, error_file) == (1, 1, 2)
    # The input file's retention ends now, as the clock would end it; its batch's error file, derived
    # from it, goes with it.
    with sqlite3.connect(database) as connection:
        connection.execute(
            "UPDATE batch_files SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?", (file_id,)
        )
    assert wait_until(lambda: rows(database, batch_id, file_id, error_file) == (0, 0, 0), timeout_s=5)
    assert http.get(f"/v1/files/{error_file}").status_code == 404
    assert http.get(f"/v1/batches/{batch_id}").status_code == 404
    assert http.get(f"/v1/files/{kept}").status_code == 200  # a file within its retention stays
