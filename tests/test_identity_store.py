"""The identity parts that need no server: the schema's migrations against the tables the code uses,
the usage ledger's idempotent writes (SQLite), managed keys' format and revocation, scopes, and secret
settings read from files."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from gateway.database import Database
from gateway.database.tables import metadata
from gateway.security.managed_keys import KEY_PATTERN, ManagedKeys
from gateway.security.scopes import Scope, parse_scopes
from gateway.usage import UsageLedger, UsageRecord
from gateway.usage.ledger import now
from samo.settings import SECRETS_DIR_VARIABLE, GatewaySettings


@pytest.fixture()
def database(tmp_path: Path) -> Database:
    return Database.open(f"sqlite:///{tmp_path / 'samo.db'}")


def test_the_migrations_create_exactly_the_tables_the_code_uses(database: Database) -> None:
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), metadata) == []
    Database.open(str(database.engine.url)).close()  # a second start finds the schema current


def test_the_ledger_keeps_one_row_per_request_and_a_success_replaces_a_failure(database: Database) -> None:
    def row(request_id: str, status: str, texts: int, tenant: str = "acme") -> UsageRecord:
        return UsageRecord(
            request_id, tenant, "web-app", "emotions", "emotion", "1", texts, 9 * texts, 0.0, status, now()
        )

    async def scenario() -> list:
        ledger = UsageLedger(database)
        # One batch holding a request three times, another tenant's request of the same ID, and a
        # later batch retrying the first request once more (failed this time): the success stays.
        for record in (
            row("r1", "overloaded", 0),
            row("r1", "ok", 2),
            row("r1", "ok", 2),
            row("r1", "ok", 2, "beta"),
        ):
            ledger.record(record)
        await ledger.flush()
        ledger.record(row("r1", "upstream_unavailable", 0))
        ledger.record(row("r2", "invalid_input", 0))
        await ledger.stop()
        start, end = now() - timedelta(hours=1), now() + timedelta(hours=1)
        return await ledger.report(start, end, ("tenant", "status"), None)

    rows = asyncio.run(scenario())
    assert [(r.tenant, r.status, r.requests, r.texts, r.tokens) for r in rows] == [
        ("acme", "invalid_input", 1, 0, 0),
        ("acme", "ok", 1, 2, 18),
        ("beta", "ok", 1, 2, 18),
    ]


def test_managed_keys_are_shown_once_stored_hashed_and_revoked_for_every_reader(database: Database) -> None:
    async def scenario() -> None:
        creator, reader = ManagedKeys(database, 1.0), ManagedKeys(database, 1.0)
        await creator.refresh()
        created = await creator.create("web-app", "acme", [Scope.EMOTIONS, Scope.JOURNAL], "operator")
        assert KEY_PATTERN.fullmatch(created.key)
        assert created.key.startswith(created.prefix + "_")
        await reader.refresh()
        principal = reader.principal_for(created.key)
        assert principal is not None
        assert (principal.tenant, principal.scopes) == ("acme", {Scope.EMOTIONS, Scope.JOURNAL})
        assert reader.principal_for(created.key[:-1] + ("A" if created.key[-1] != "A" else "B")) is None
        with database.engine.connect() as connection:
            stored = " ".join(
                str(value) for row in connection.exec_driver_sql("select * from api_keys") for value in row
            )
        assert created.key not in stored and created.key.rsplit("_", 1)[1] not in stored
        assert await creator.revoke(created.id) is not None
        await reader.refresh()
        assert reader.principal_for(created.key) is None
        assert (await reader.list("acme"))[0].revoked_at is not None

    asyncio.run(scenario())


def test_scopes_keep_samos_own_and_ignore_the_rest() -> None:
    assert parse_scopes(["openid", "profile", "emotions", "journal", "admin"]) == {
        Scope.EMOTIONS,
        Scope.JOURNAL,
        Scope.ADMIN,
    }
    assert parse_scopes(["samo:summaries", "summaries", "samo:nope", "other:emotions"], "samo:") == {
        Scope.SUMMARIES
    }


def test_secret_settings_come_from_files_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "postgresql+psycopg://samo:s3cret-pass@db:5432/samo"
    (tmp_path / "SAMO_DATABASE_URL").write_text(url + "\n")
    monkeypatch.setenv(SECRETS_DIR_VARIABLE, str(tmp_path))
    monkeypatch.delenv("SAMO_DATABASE_URL", raising=False)
    settings = GatewaySettings()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == url
    assert "s3cret" not in repr(settings) + str(settings.model_dump())
    monkeypatch.setenv("SAMO_DATABASE_URL", "sqlite:///from-env.db")
    assert GatewaySettings().database_url.get_secret_value() == "sqlite:///from-env.db"
