"""Scopes: what a principal may do, one per operation family, and the one gate that checks them.

Every operation entry (gateway/operations) and every admin route asks `authorize` before it reads its
input, so a caller without the scope learns nothing about the request's validity and no transport
(HTTP, gRPC, the WebSocket sessions and batch lines to come) can forget the check.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from gateway.errors import ErrorType, SamoError


class Scope(StrEnum):
    EMOTIONS = "emotions"
    TRANSCRIPTION = "transcription"
    SUMMARIES = "summaries"
    JOURNAL = "journal"
    LIVE = "live"
    """Live transcription sessions."""
    BATCH = "batch"
    """Batch jobs."""
    ADMIN = "admin"
    """Managed API keys, every tenant's usage."""


GENERATING_SCOPES = frozenset({Scope.SUMMARIES, Scope.JOURNAL})
"""Families whose models generate tokens: the ones a spent generated-tokens quota refuses."""
OPERATION_SCOPES = frozenset(Scope) - {Scope.ADMIN}
"""Every operation family: what a key of the keys file and an open gateway's caller may call."""


def parse_scopes(names: Iterable[str], prefix: str = "") -> frozenset[Scope]:
    """The scopes among `names` (`samo:emotions` with prefix `samo:`); others (`openid`, `profile`, a
    misspelt one) are ignored rather than refused, as identity providers put scopes of other APIs in
    the same claim."""
    known = {scope.value: scope for scope in Scope}
    found = (known.get(name.removeprefix(prefix)) for name in names if name.startswith(prefix))
    return frozenset(scope for scope in found if scope is not None)


def forbidden(scope: Scope) -> SamoError:
    return SamoError(ErrorType.FORBIDDEN, f"this credential lacks the `{scope}` scope")
