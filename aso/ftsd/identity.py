"""Who is calling the embedded FTS service.

The dataclass is the contract between the HTTP layer and the routes; how an identity is
derived from a client certificate chain lives in ``identity_from_environ``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Identity:
    #: the end-entity DN in slash form ("/DC=org/DC=example/CN=Alice"), never a proxy DN
    user_dn: str
    #: VOMS FQANs in attribute-certificate order (empty without VOMS)
    fqans: tuple[str, ...] = ()
    #: VO names; without VOMS FTS3 uses [delegation_id]
    vos: tuple[str, ...] = ()
    #: first 16 hex chars of sha1(user_dn + fqan1 + fqan2 ...), as FTS3 computes it
    delegation_id: str = ""
    #: "certificate" over HTTPS, "unauthenticated" in plain-HTTP single-user mode
    method: str = "certificate"
    #: PEM certificates the client presented, leaf first (empty in plain-HTTP mode)
    chain_pem: tuple[str, ...] = field(default=(), repr=False)

    @property
    def vo_name(self) -> str:
        return self.vos[0] if self.vos else self.delegation_id
