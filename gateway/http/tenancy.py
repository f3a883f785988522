"""The tenants' routes: managed API keys (`/v1/admin/keys`, admin scope) and usage (`/v1/usage`); the
entries (gateway/operations/tenancy.py) gate and validate, as the model operations do."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from gateway.http.answers import answer
from gateway.http.context import request_context
from gateway.http.errors import ERRORS
from gateway.operations.tenancy import NewKeyFields, Tenancy, UsageGroup
from gateway.results import ApiKeyInfo, ApiKeyList, NewApiKey, UsageReport


def tenancy_router() -> APIRouter:
    router = APIRouter(tags=["tenants"])

    def tenancy(request: Request) -> Tenancy:
        return request.app.state.tenancy

    @router.post("/v1/admin/keys", response_model=NewApiKey, status_code=201, responses=ERRORS)
    async def create_key(body: NewKeyFields, request: Request) -> Response:
        """A new API key for a tenant, with its scopes. The key is in this answer only: the gateway keeps
        its SHA-256. Every replica accepts it within `SAMO_MANAGED_KEYS_REFRESH_S`."""
        created = await tenancy(request).create_key(request_context(request), body)
        response = answer(created)
        response.status_code = 201
        return response

    @router.get("/v1/admin/keys", response_model=ApiKeyList, responses=ERRORS)
    async def list_keys(request: Request, tenant: str | None = None) -> Response:
        """Every managed key (one tenant's with `tenant`), revoked ones included; never the keys themselves."""
        return answer(await tenancy(request).list_keys(request_context(request), tenant))

    @router.delete("/v1/admin/keys/{key_id}", response_model=ApiKeyInfo, responses=ERRORS)
    async def revoke_key(key_id: str, request: Request) -> Response:
        """Revoke a key: refused by every replica within `SAMO_MANAGED_KEYS_REFRESH_S`."""
        return answer(await tenancy(request).revoke_key(request_context(request), key_id))

    @router.get("/v1/usage", response_model=UsageReport, responses=ERRORS)
    async def usage(
        request: Request,
        start: datetime | None = None,
        end: datetime | None = None,
        group_by: Annotated[list[UsageGroup] | None, Query()] = None,
        tenant: str | None = None,
    ) -> Response:
        """Requests answered and units used in `[start, end)` (ISO 8601 with a time zone; default: the
        last 30 days), grouped by `group_by` (repeat it: `tenant`, `operation`, `model`, `status`, `day`;
        default `operation`). A tenant sees its own usage; the `admin` scope every tenant's, or `tenant`'s."""
        fields = {"start": start, "end": end, "group_by": group_by or ["operation"], "tenant": tenant}
        return answer(await tenancy(request).usage(request_context(request), fields))

    return router
