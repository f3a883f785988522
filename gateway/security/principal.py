"""The caller, as the access check found it: its tenant and scopes, and the one authorization gate."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from gateway.security.scopes import OPERATION_SCOPES, Scope, forbidden


class Credential(StrEnum):
    ADDRESS = "address"
    """No credentials configured: the client's address names the caller."""
    KEY_FILE = "key_file"
    MANAGED_KEY = "managed_key"
    TOKEN = "token"


@dataclass(frozen=True)
class Principal:
    """The caller: an API key's name, a token's subject, or a client address when the gateway runs
    without credentials; the tenant its usage and quotas count against; what it may call."""

    name: str
    authenticated: bool
    tenant: str = ""
    """Empty: the gateway's one implicit tenant (keys file keys are each their own tenant)."""
    scopes: frozenset[Scope] = field(default=OPERATION_SCOPES)
    credential: Credential = Credential.KEY_FILE
    label_name: str | None = None
    """The name for metrics labels when it is not `name` (a token's subject: one series per user)."""

    @property
    def label(self) -> str:
        """For metrics labels: the key's name; addresses would make one series per client."""
        if not self.authenticated:
            return "anonymous"
        return self.label_name or self.name

    @property
    def counter_key(self) -> str:
        if not self.authenticated:
            return f"address:{self.name}"
        if self.credential is Credential.KEY_FILE:
            return f"key:{self.name}"
        return f"{self.credential}:{self.name}"

    def authorize(self, scope: Scope) -> None:
        """The gate: FORBIDDEN (403, PERMISSION_DENIED) unless this principal holds `scope`."""
        if scope not in self.scopes:
            raise forbidden(scope)
