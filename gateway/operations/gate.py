"""The authorization gate, applied to every operation entry the same way: `@requires(Scope.EMOTIONS)`:
the caller's scope, then its tenant's request quota.

It runs first, before the entry validates its fields or admits the request, so a caller without the
scope costs no admission and learns nothing of the request's fate (on HTTP, FastAPI checks a JSON body
against the schema the OpenAPI document already publishes before any entry runs). The caller is the one the transport's access check
put in the request's context; a context without one (the health monitor's probes, a gateway started
without an access check) has passed no check to refuse.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Concatenate, ParamSpec, TypeVar

from gateway.context import RequestContext
from gateway.errors import SamoError
from gateway.security.scopes import Scope

Owner = TypeVar("Owner")
Params = ParamSpec("Params")
Answer = TypeVar("Answer")
Entry = Callable[Concatenate[Owner, RequestContext, Params], Awaitable[Answer]]
"""An operation entry: a method taking the request's context first."""


def authorize(context: RequestContext, scope: Scope) -> None:
    """FORBIDDEN (403, PERMISSION_DENIED) unless the request's caller holds `scope`."""
    if context.principal is not None:
        context.principal.authorize(scope)


async def admit_caller(context: RequestContext, scope: Scope) -> None:
    """`authorize`, then one request against the caller's tenant quota (429 with Retry-After when spent);
    refusals counted in `samo_access_rejections_total` (`forbidden`, `over_quota`)."""
    access, principal = context.access, context.principal
    if access is None or principal is None:
        authorize(context, scope)
        return
    try:
        principal.authorize(scope)
    except SamoError:
        access.rejections.labels("forbidden", access.label(principal.label)).inc()
        raise
    await access.hit_quota(principal, scope)


def requires(
    scope: Scope,
) -> Callable[[Entry[Owner, Params, Answer]], Entry[Owner, Params, Answer]]:
    """An entry `(self, context, ...)` that first checks that the caller holds `scope`."""

    def gated(entry: Entry[Owner, Params, Answer]) -> Entry[Owner, Params, Answer]:
        @functools.wraps(entry)
        async def checked(
            owner: Owner, context: RequestContext, /, *args: Params.args, **kwargs: Params.kwargs
        ) -> Answer:
            await admit_caller(context, scope)
            return await entry(owner, context, *args, **kwargs)

        return checked

    return gated
