"""Who is calling the embedded FTS service.

The dataclass is the contract between the HTTP layer and the routes; how an identity is
derived from a client certificate chain lives in ``identity_from_environ``.
"""

from __future__ import annotations

import hashlib
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


#: mod_ssl's environ names, which the HTTPS server (aso.ftsd.tls) fills in from the verified
#: chain: SSL_CLIENT_VERIFY is "SUCCESS" only when the chain was verified against the CA folder.
SSL_CLIENT_VERIFY = "SSL_CLIENT_VERIFY"
SSL_CLIENT_CERT = "SSL_CLIENT_CERT"
SSL_CLIENT_CERT_CHAIN = "SSL_CLIENT_CERT_CHAIN_"


def delegation_id(user_dn: str, fqans: tuple[str, ...] | list[str] = ()) -> str:
    """FTS3's delegation id: the first 16 hex characters of sha1(user_dn + fqan1 + fqan2 ...)."""
    digest = hashlib.sha1((user_dn + "".join(fqans)).encode("utf-8"), usedforsecurity=False)
    return digest.hexdigest()[:16]


def vos_from_fqans(fqans: tuple[str, ...], dlg_id: str) -> tuple[str, ...]:
    """VO names as FTS3 derives them: the FQAN path before ``/Role=``, first group only; with
    no VOMS attributes (and no grid-mapfile), the delegation id stands in for the VO."""
    vos: list[str] = []
    for fqan in fqans:
        vo = fqan.split("/Role=", 1)[0].strip("/").split("/", 1)[0]
        if vo and vo not in vos:
            vos.append(vo)
    return tuple(vos) or (dlg_id,)


def client_chain_pem(environ: dict) -> tuple[str, ...]:
    """The PEM certificates of a verified client, leaf first, as mod_ssl names them."""
    if environ.get(SSL_CLIENT_VERIFY) != "SUCCESS" or not environ.get(SSL_CLIENT_CERT):
        return ()
    chain = [environ[SSL_CLIENT_CERT]]
    n = 0
    while f"{SSL_CLIENT_CERT_CHAIN}{n}" in environ:
        chain.append(environ[f"{SSL_CLIENT_CERT_CHAIN}{n}"])
        n += 1
    return tuple(chain)


def identity_from_environ(environ: dict) -> Identity | None:
    """The caller of an HTTPS request, or None when it presented no verified certificate.

    The user is the end-entity DN of the chain, so a proxy, a proxy of a proxy and the user
    certificate itself are the same user with the same delegation id. VOMS attributes are not
    read (test proxies carry none), so fqans is empty and the VO is the delegation id.
    """
    from aso.x509.proxy import ProxyError, end_entity_dn, load_certificates

    chain_pem = client_chain_pem(environ)
    if not chain_pem:
        return None
    try:
        user_dn = end_entity_dn(load_certificates("".join(chain_pem).encode()))
    except ProxyError:
        return None
    fqans: tuple[str, ...] = ()
    dlg_id = delegation_id(user_dn, fqans)
    return Identity(
        user_dn=user_dn,
        fqans=fqans,
        vos=vos_from_fqans(fqans, dlg_id),
        delegation_id=dlg_id,
        method="certificate",
        chain_pem=chain_pem,
    )
