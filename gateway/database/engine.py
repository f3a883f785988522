"""The database engine, its schema migrated (Alembic) when it is opened."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
# Replicas starting together migrate one at a time (PostgreSQL advisory lock; any constant will do).
MIGRATION_LOCK = 0x5A4D0_23


def _sqlite_pragmas(dbapi_connection: object, _: object) -> None:
    """WAL lets readers run beside the one writer; a writer waits for another instead of failing."""
    cursor = dbapi_connection.cursor()  # pyright: ignore[reportAttributeAccessIssue]  # a DB-API connection
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """One engine over `url`; `open` migrates the schema to the newest revision first."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @classmethod
    def open(cls, url: str) -> Database:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed)
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(parsed, pool_pre_ping=True, pool_size=4, max_overflow=4)
        database = cls(engine)
        database.migrate()
        # The URL's password never reaches a log.
        logger.info("database: %s", parsed.render_as_string(hide_password=True))
        return database

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._migration_lock(), self.engine.begin() as connection:
            if self.dialect == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextlib.contextmanager
    def _migration_lock(self) -> Iterator[None]:
        """SQLite: the gateway's worker processes start together; one migrates, the others wait on a lock
        file beside the database (PostgreSQL's own lock is taken inside the transaction)."""
        database = self.engine.url.database
        if self.dialect != "sqlite" or not database or database == ":memory:":
            yield
            return
        with open(f"{database}.migrate.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def close(self) -> None:
        self.engine.dispose()
