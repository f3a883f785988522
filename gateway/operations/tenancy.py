"""The tenants' entries: managed API keys (admin scope) and usage (a tenant its own; admin any), behind
the same gate as the model operations. HTTP serves them under /v1/admin/keys and /v1/usage."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from gateway.context import RequestContext
from gateway.errors import ErrorType, SamoError, invalid_input, not_found
from gateway.operations.gate import authorize
from gateway.results import ApiKeyInfo, ApiKeyList, NewApiKey, UsageReport
from gateway.security.api_keys import NAME_PATTERN
from gateway.security.managed_keys import ManagedKeys
from gateway.security.scopes import Scope
from gateway.usage import UsageLedger
from gateway.usage.ledger import now
from gateway.validation import validate_body

NO_DATABASE = "managed API keys and usage need a database: set SAMO_DATABASE_URL"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
UsageGroup = Literal["tenant", "operation", "model", "status", "day"]


class NewKeyFields(BaseModel):
    """`POST /v1/admin/keys`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{NAME_PATTERN.pattern}$", description="What the key is for, e.g. `web-app`.")
    tenant: str = Field(pattern=TENANT_PATTERN)
    scopes: list[Scope] = Field(min_length=1, description="Operation families the key may call.")


class UsageFields(BaseModel):
    """`GET /v1/usage` query: `[start, end)`, the last 30 days by default; grouped by `group_by`."""

    model_config = ConfigDict(extra="forbid")

    start: AwareDatetime | None = None
    end: AwareDatetime | None = None
    group_by: list[UsageGroup] = Field(default_factory=lambda: ["operation"], max_length=5)
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)
    """Admin only: one tenant (default: every tenant). Others always see their own."""


class Tenancy:
    def __init__(self, keys: ManagedKeys | None, ledger: UsageLedger | None) -> None:
        self.keys = keys
        self.ledger = ledger

    def _keys(self, context: RequestContext) -> ManagedKeys:
        authorize(context, Scope.ADMIN)
        if self.keys is None:
            raise not_found(NO_DATABASE)
        return self.keys

    async def create_key(
        self, context: RequestContext, fields: Mapping[str, Any] | NewKeyFields
    ) -> NewApiKey:
        keys = self._keys(context)
        body = validate_body(NewKeyFields, fields)
        creator = context.principal.label if context.principal is not None else "unknown"
        return await keys.create(body.name, body.tenant, body.scopes, created_by=creator)

    async def list_keys(self, context: RequestContext, tenant: str | None = None) -> ApiKeyList:
        return ApiKeyList(keys=tuple(await self._keys(context).list(tenant)))

    async def revoke_key(self, context: RequestContext, key_id: str) -> ApiKeyInfo:
        revoked = await self._keys(context).revoke(key_id)
        if revoked is None:
            raise not_found(f"no API key with ID `{key_id[:64]}`")
        return revoked

    async def usage(self, context: RequestContext, fields: Mapping[str, Any] | UsageFields) -> UsageReport:
        principal = context.principal
        if self.ledger is None:
            raise not_found(NO_DATABASE)
        body = validate_body(UsageFields, fields)
        end = body.end or now()
        start = body.start or end - timedelta(days=30)
        if start >= end:
            raise invalid_input("start: must be before `end`")
        tenant = body.tenant
        if principal is not None and Scope.ADMIN not in principal.scopes:
            if tenant not in (None, principal.tenant):
                raise SamoError(ErrorType.FORBIDDEN, "only the `admin` scope reads another tenant's usage")
            tenant = principal.tenant
        groups = tuple(dict.fromkeys(body.group_by))
        rows = await self.ledger.report(start, end, groups, tenant)
        return UsageReport(start=start, end=end, group_by=groups, rows=tuple(rows))
