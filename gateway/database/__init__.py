"""The gateway's database: managed API keys and the usage ledger, in SQLite (the embedded default) or
PostgreSQL, through SQLAlchemy Core; the schema is Alembic's migrations (`migrations/`), applied at start.

Blocking calls (SQLAlchemy's engines are synchronous here, as psycopg and sqlite3 are) run in worker
threads: the callers (gateway/security/managed_keys.py, gateway/usage/) batch them off the request path.
"""

from gateway.database.engine import Database

__all__ = ["Database"]
