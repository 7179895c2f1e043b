"""Who is calling the state server, and what their role lets them do.

The server asks an :class:`Authenticator` for an :class:`Identity`; bearer tokens from the
configuration are the first kind. X.509 client certificates slot in as another
authenticator without touching the routes.
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from aso.errors import ConfigError

ROLES = ("service", "operator", "user")


@dataclass(frozen=True)
class Identity:
    name: str
    role: str

    @property
    def owner_filter(self) -> str | None:
        """Users see and change only their own rows; other roles see all."""
        return self.name if self.role == "user" else None


class Authenticator(ABC):
    @abstractmethod
    def authenticate(self, headers: Any) -> Identity | None:
        """The caller's identity, or None when the request carries no valid credential."""


class BearerTokenAuthenticator(Authenticator):
    def __init__(self, tokens: list[dict[str, Any]]):
        self._tokens: list[tuple[bytes, Identity]] = []
        for i, entry in enumerate(tokens):
            where = f"server.tokens[{i}]"
            if not isinstance(entry, dict):
                raise ConfigError(f"{where}: expected a table with token, identity and role")
            token, name, role = entry.get("token"), entry.get("identity"), entry.get("role")
            if not isinstance(token, str) or len(token) < 8:
                raise ConfigError(f"{where}.token: a string of at least 8 characters is required")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{where}.identity: required")
            if role not in ROLES:
                raise ConfigError(f"{where}.role: must be one of {', '.join(ROLES)}")
            self._tokens.append((token.encode(), Identity(name, role)))

    def authenticate(self, headers: Any) -> Identity | None:
        value = headers.get("Authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.strip().encode()
        found = None
        # Compare against every token so the time taken says nothing about which matched.
        for known, identity in self._tokens:
            if hmac.compare_digest(known, given):
                found = identity
        return found
