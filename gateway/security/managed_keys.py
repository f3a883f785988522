"""Managed API keys: created, listed and revoked through the admin API, kept in the database.

A key is `samo_<prefix>_<secret>`: the `samo_` start makes a leaked key recognisable to secret scanners,
the prefix finds it and names it in listings, and only its SHA-256 is stored (keys are 256-bit random,
so a fast hash is enough; no password hashing is needed). Each gateway process holds the live keys in
memory, read again every `managed_keys_refresh_s`: a key revoked on one replica stops working on every
replica within that time. If the database stays unreachable for `STALE_AFTER_REFRESHES` refreshes, keys
are refused (503) rather than trusted without knowing what was revoked since.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from gateway.database import Database
from gateway.database.tables import api_keys
from gateway.errors import ErrorType, SamoError
from gateway.results import ApiKeyInfo, NewApiKey
from gateway.security.principal import Credential, Principal
from gateway.security.scopes import Scope, parse_scopes

logger = logging.getLogger(__name__)

KEY_START = "samo_"
KEY_PATTERN = re.compile(r"samo_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
STALE_AFTER_REFRESHES = 10


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str]:
    """A fresh key and its prefix (`samo_<12 hex>`)."""
    prefix = secrets.token_hex(6)
    return f"{KEY_START}{prefix}_{secrets.token_urlsafe(32)}", prefix


@dataclass(frozen=True)
class _Live:
    digest: str
    principal: Principal


def _info(mapping: Mapping[Any, Any]) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=mapping["id"],
        name=mapping["name"],
        tenant=mapping["tenant"],
        scopes=tuple(mapping["scopes"].split()),
        prefix=KEY_START + mapping["prefix"],
        created_at=_utc(mapping["created_at"]),
        created_by=mapping["created_by"],
        revoked_at=_utc(mapping["revoked_at"]) if mapping["revoked_at"] is not None else None,
    )


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class ManagedKeys:
    """The managed keys of one database, as one gateway process sees them."""

    def __init__(self, database: Database, refresh_s: float) -> None:
        self.database = database
        self.refresh_s = refresh_s
        self._live: dict[str, _Live] = {}
        self._loaded_at: float | None = None
        self._failing = False

    # -- authentication (in memory, on every request) --

    @staticmethod
    def recognises(presented: str) -> bool:
        return presented.startswith(KEY_START)

    def principal_for(self, presented: str) -> Principal | None:
        """The key's principal; None when it is not a live key. UNAVAILABLE when the keys have not been
        read for too long to know which are revoked."""
        if (
            self._loaded_at is None
            or time.monotonic() - self._loaded_at > self.refresh_s * STALE_AFTER_REFRESHES
        ):
            raise SamoError(
                ErrorType.UNAVAILABLE, "managed API keys cannot be checked: the database is unreachable"
            )
        match = KEY_PATTERN.fullmatch(presented)
        live = self._live.get(match.group(1)) if match else None
        if live is None or not hmac.compare_digest(live.digest, _digest(presented)):
            return None
        return live.principal

    async def refresh(self) -> None:
        """Read the live keys again; a failure keeps the previous ones (until they are stale)."""
        try:
            rows = await asyncio.to_thread(self._read_live)
        except SQLAlchemyError as exc:
            if not self._failing:
                logger.warning(
                    "managed API keys not refreshed, the previous ones stay: %s", type(exc).__name__
                )
                self._failing = True
            return
        if self._failing:
            logger.info("managed API keys refreshed again")
            self._failing = False
        self._live = {
            info.prefix.removeprefix(KEY_START): _Live(digest, _principal(info)) for info, digest in rows
        }
        self._loaded_at = time.monotonic()

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            await self.refresh()

    def _read_live(self) -> list[tuple[ApiKeyInfo, str]]:
        query = select(api_keys).where(api_keys.c.revoked_at.is_(None))
        with self.database.engine.connect() as connection:
            return [(_info(row._mapping), row.digest) for row in connection.execute(query)]

    # -- the admin API --

    async def create(self, name: str, tenant: str, scopes: Iterable[Scope], created_by: str) -> NewApiKey:
        key, prefix = new_key()
        row = {
            "id": secrets.token_hex(8),
            "name": name,
            "tenant": tenant,
            "scopes": " ".join(sorted(scopes)),
            "prefix": prefix,
            "digest": _digest(key),
            "created_at": datetime.now(UTC),
            "created_by": created_by,
            "revoked_at": None,
        }

        def write() -> None:
            with self.database.engine.begin() as connection:
                connection.execute(insert(api_keys).values(**row))

        await asyncio.to_thread(write)
        info = _info(row)
        # This replica knows it at once; the others within a refresh.
        self._live[prefix] = _Live(row["digest"], _principal(info))
        logger.info("API key %s (%s) created for tenant %s by %s", info.id, info.prefix, tenant, created_by)
        return NewApiKey(**info.model_dump(), key=key)

    async def list(self, tenant: str | None = None) -> list[ApiKeyInfo]:
        def read() -> list[ApiKeyInfo]:
            query = select(api_keys).order_by(api_keys.c.created_at)
            if tenant is not None:
                query = query.where(api_keys.c.tenant == tenant)
            with self.database.engine.connect() as connection:
                return [_info(row._mapping) for row in connection.execute(query)]

        return await asyncio.to_thread(read)

    async def revoke(self, key_id: str, tenant: str | None = None) -> ApiKeyInfo | None:
        """Revoke the key (once: a second revoke keeps the first time); None when there is no such key
        (in `tenant`, when given)."""

        def write() -> ApiKeyInfo | None:
            with self.database.engine.begin() as connection:
                condition = api_keys.c.id == key_id
                if tenant is not None:
                    condition &= api_keys.c.tenant == tenant
                connection.execute(
                    update(api_keys)
                    .where(condition & api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=datetime.now(UTC))
                )
                row = connection.execute(select(api_keys).where(condition)).first()
                return _info(row._mapping) if row is not None else None

        info = await asyncio.to_thread(write)
        if info is not None:
            self._live.pop(info.prefix.removeprefix(KEY_START), None)
            logger.info("API key %s (%s) revoked", info.id, info.prefix)
        return info


def _principal(info: ApiKeyInfo) -> Principal:
    return Principal(
        name=f"{info.name}.{info.id}",  # names repeat across tenants; the ID does not
        authenticated=True,
        tenant=info.tenant,
        scopes=parse_scopes(info.scopes),
        credential=Credential.MANAGED_KEY,
        label_name=f"tenant:{info.tenant}",
    )
