"""FTS3's identity and delegation resources: /whoami and /delegation/{id}[/request|/credential].

Delegation as FTS3 does it: the server makes a key pair and a CSR, the client signs the CSR
with its proxy key into a proxy of its proxy and PUTs that certificate followed by its own
chain; the server keeps certificate + key + chain as the user's delegated proxy, valid until
the earliest notAfter of the chain.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from flask import Blueprint, Response, current_app, g, jsonify, request

from aso.ftsd.credentials_store import CredentialStore, PendingRequest, StoredCredential
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.identity import Identity
from aso.ftsd.jobs import BASE_ID, TIME_FORMAT
from aso.x509.proxy import ProxyError, dn_slash, end_entity_dn, load_certificates

bp = Blueprint("delegation", __name__)

#: Submissions need at least this much left on the delegated proxy (FTS3's rule).
MIN_LIFETIME = dt.timedelta(hours=1)
#: FTS3 answers [] instead of null for "no credential" to clients of 3.12 and later (FTS-1734).
_NEW_CLIENT = re.compile(r"^fts-[^/\s]*/(\d+)\.(\d+)")
_REQUEST_KEY_BITS = 2048


def _store() -> CredentialStore:
    return current_app.extensions["aso_credentials"]


def _caller() -> Identity:
    identity = getattr(g, "identity", None)
    if identity is None:
        raise FtsHttpError(401, "A valid X509 certificate or proxy is needed")
    return identity


def _own(dlg_id: str) -> Identity:
    identity = _caller()
    if dlg_id != identity.delegation_id:
        raise FtsHttpError(403, "The requested ID and the credentials ID do not match")
    return identity


def whoami_document(identity: Identity) -> dict:
    """Every field FTS3's /whoami has."""
    return {
        "user_dn": identity.user_dn,
        "dn": [identity.user_dn],
        "base_id": str(BASE_ID),
        "voms_cred": list(identity.fqans),
        "vos": list(identity.vos),
        "vos_id": [str(uuid.uuid5(BASE_ID, vo)) for vo in identity.vos],
        "roles": [fqan.split("/Role=", 1)[1].split("/", 1)[0] for fqan in identity.fqans
                  if "/Role=" in fqan and not fqan.endswith("/Role=NULL/Capability=NULL")],
        "level": {"transfer": "vo", "deleg": "vo"},
        "delegation_id": identity.delegation_id,
        "method": identity.method,
        "is_root": False,
    }


@bp.get("/whoami")
def whoami():
    return jsonify(whoami_document(_caller()))


@bp.get("/whoami/certificate")
def whoami_certificate():
    identity = _caller()
    if not identity.chain_pem:
        raise FtsHttpError(404, "No certificate was presented")
    return Response("".join(identity.chain_pem), mimetype="text/plain")


def _answers_empty_list(user_agent: str) -> bool:
    m = _NEW_CLIENT.match(user_agent or "")
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (3, 12)


def credential_document(cred: StoredCredential) -> dict:
    naive_utc = cred.termination_time.astimezone(dt.UTC).replace(tzinfo=None)
    return {"termination_time": naive_utc.strftime(TIME_FORMAT), "voms_attrs": list(cred.voms_attrs)}


@bp.get("/delegation/<dlg_id>")
def view(dlg_id: str):
    identity = _own(dlg_id)
    cred = _store().get(dlg_id, identity.user_dn)
    if cred is None:
        return jsonify([] if _answers_empty_list(request.headers.get("User-Agent", "")) else None)
    return jsonify(credential_document(cred))


def _request_key_bits(identity: Identity) -> int:
    """2048 bits, or the client's own key size when that is larger (as FTS3 matches it)."""
    if identity.chain_pem:
        try:
            leaf = x509.load_pem_x509_certificate(identity.chain_pem[0].encode())
        except ValueError:
            return _REQUEST_KEY_BITS
        key = leaf.public_key()
        if isinstance(key, rsa.RSAPublicKey) and key.key_size > _REQUEST_KEY_BITS:
            return key.key_size
    return _REQUEST_KEY_BITS


def new_request(bits: int = _REQUEST_KEY_BITS) -> tuple[str, str]:
    """A fresh RSA key and a self-signed PKCS#10 request for it (subject O=Dummy, SHA-256)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Dummy")]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


def pending_request(store: CredentialStore, identity: Identity) -> PendingRequest:
    cached = store.pending_request(identity.delegation_id, identity.user_dn)
    if cached is not None:
        return cached
    csr_pem, key_pem = new_request(_request_key_bits(identity))
    return store.save_request(identity.delegation_id, identity.user_dn, csr_pem, key_pem)


@bp.get("/delegation/<dlg_id>/request")
def proxy_request(dlg_id: str):
    identity = _own(dlg_id)
    pending = pending_request(_store(), identity)
    resp = Response(pending.csr_pem, mimetype="text/plain")
    resp.headers["X-Delegation-ID"] = dlg_id
    return resp


def _bad_proxy(problem: str) -> FtsHttpError:
    return FtsHttpError(400, f"Could not process the proxy: {problem}")


def build_delegated_proxy(pending: PendingRequest, body: bytes, user_dn: str) -> tuple[str, dt.datetime]:
    """Check a PUT chain against the cached request; return the proxy file to keep and the
    chain's earliest notAfter. Raises FtsHttpError(400) saying what is wrong."""
    try:
        certs = load_certificates(body)
    except ProxyError as exc:
        raise _bad_proxy(str(exc)) from exc
    if len(certs) < 2:
        raise _bad_proxy("expected the delegated certificate followed by the chain that signed it (at least 2 certificates)")
    key = serialization.load_pem_private_key(pending.key_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _bad_proxy("the cached request key is not RSA")
    leaf_key = certs[0].public_key()
    if not isinstance(leaf_key, rsa.RSAPublicKey) or leaf_key.public_numbers().n != key.public_key().public_numbers().n:
        raise _bad_proxy("the certificate does not match the private key of the delegation request")
    for cert, issuer in zip(certs, certs[1:], strict=False):
        try:
            cert.verify_directly_issued_by(issuer)
        except (InvalidSignature, ValueError, TypeError):
            raise _bad_proxy(f"{dn_slash(cert.subject)} is not signed by {dn_slash(issuer.subject)}") from None
    rdns = certs[0].subject.rdns
    last = list(rdns[-1]) if rdns else []
    if list(rdns[:-1]) != list(certs[0].issuer.rdns) or len(last) != 1 or last[0].oid != NameOID.COMMON_NAME:
        raise _bad_proxy(f"the subject {dn_slash(certs[0].subject)} is not the issuer's plus one CN")
    try:
        owner = end_entity_dn(certs)
    except ProxyError as exc:
        raise _bad_proxy(str(exc)) from exc
    if owner != user_dn:
        raise _bad_proxy(f"the chain belongs to {owner}, not to {user_dn}")
    termination = min(c.not_valid_after_utc for c in certs)
    chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]).decode()
    proxy_pem = certs[0].public_bytes(serialization.Encoding.PEM).decode() + pending.key_pem + chain_pem
    return proxy_pem, termination


@bp.route("/delegation/<dlg_id>/credential", methods=["PUT", "POST"])
def credential(dlg_id: str):
    identity = _own(dlg_id)
    store = _store()
    pending = store.pending_request(dlg_id, identity.user_dn)
    if pending is None:
        raise FtsHttpError(400, "No credential cache found")
    proxy_pem, termination = build_delegated_proxy(pending, request.get_data(), identity.user_dn)
    store.save(dlg_id, identity.user_dn, proxy_pem, identity.fqans, termination)
    return Response("", status=201)


@bp.delete("/delegation/<dlg_id>")
def delete(dlg_id: str):
    identity = _own(dlg_id)
    if not _store().delete(dlg_id, identity.user_dn):
        raise FtsHttpError(404, "No credentials found")
    return Response("", status=204)


def require_usable_delegation(
    store: CredentialStore, identity: Identity, now: dt.datetime | None = None
) -> StoredCredential | None:
    """What a submission needs: a delegated proxy with at least an hour left, else 419 as
    FTS3 words it. In plain-HTTP single-user mode there are no certificates to delegate."""
    if identity.method == "unauthenticated":
        return None
    cred = store.get(identity.delegation_id, identity.user_dn)
    if cred is None:
        raise FtsHttpError(419, f'No delegation found for "{identity.user_dn}"')
    left = cred.remaining(now)
    if left <= dt.timedelta(0):
        raise FtsHttpError(
            419, f"The delegated credentials expired {int(-left.total_seconds())} seconds ago ({identity.delegation_id})"
        )
    if left < MIN_LIFETIME:
        raise FtsHttpError(419, f"The delegated credentials has less than one hour left ({identity.delegation_id})")
    return cred
