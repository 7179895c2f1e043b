"""Reading and checking grid proxies: proxy files, chains, end-entity DNs, time left, and
validation of a chain against a grid CA folder with RFC 3820 proxies allowed.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

#: id-pe-proxyCertInfo (RFC 3820)
PROXY_CERT_INFO_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")

#: OpenSSL's short names, which slash-form DNs use (cryptography's RFC 4514 names differ for
#: some attributes, e.g. emailAddress).
_SHORT_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.EMAIL_ADDRESS: "emailAddress",
    NameOID.SERIAL_NUMBER: "serialNumber",
}

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class ProxyError(ValueError):
    """A proxy file or certificate chain that cannot be used; the message says why."""


def dn_slash(name: x509.Name) -> str:
    """``/DC=org/DC=example/CN=Alice``: OpenSSL's one-line form, which grid services use."""
    out = []
    for rdn in name.rdns:
        for attr in rdn:
            key = _SHORT_NAMES.get(attr.oid, attr.oid.dotted_string)
            out.append(f"/{key}={attr.value}")
    return "".join(out)


def subject_hash(cert: x509.Certificate) -> str:
    """OpenSSL's subject hash (``openssl x509 -hash``), the name of ``<hash>.0`` CA links."""
    from OpenSSL import crypto  # only needed to name CA files

    return f"{crypto.X509.from_cryptography(cert).subject_name_hash():08x}"


def load_certificates(data: bytes) -> list[x509.Certificate]:
    """Every PEM certificate in ``data``, in order (private keys and other blocks skipped)."""
    certs = []
    for block in _PEM_CERT.findall(data):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError as exc:
            raise ProxyError(f"unreadable certificate: {exc}") from exc
    return certs


def is_proxy(cert: x509.Certificate) -> bool:
    """True for an RFC 3820 proxy (has proxyCertInfo)."""
    try:
        cert.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    except x509.ExtensionNotFound:
        return False
    return True


def end_entity(chain: Sequence[x509.Certificate]) -> x509.Certificate:
    """The first certificate of a leaf-first chain that is not a proxy: the user's own."""
    for cert in chain:
        if not is_proxy(cert):
            return cert
    raise ProxyError("the chain holds only proxy certificates, no end-entity certificate")


def end_entity_dn(chain: Sequence[x509.Certificate]) -> str:
    return dn_slash(end_entity(chain).subject)


def not_after(chain: Iterable[x509.Certificate]) -> dt.datetime:
    """The earliest notAfter over a chain (aware UTC): when the chain stops being usable."""
    times = [c.not_valid_after_utc for c in chain]
    if not times:
        raise ProxyError("empty certificate chain")
    return min(times)


def time_left(chain: Iterable[x509.Certificate], now: dt.datetime | None = None) -> dt.timedelta:
    """Time until the earliest notAfter of the chain (negative once expired)."""
    return not_after(chain) - (now or dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class ProxyFile:
    """A grid proxy file: the leaf certificate, its key, and the chain above it."""

    path: Path | None
    cert: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)
    #: the certificates after the leaf, issuer first
    issuers: tuple[x509.Certificate, ...] = ()

    @property
    def chain(self) -> tuple[x509.Certificate, ...]:
        """Leaf first, then its issuers."""
        return (self.cert, *self.issuers)

    @property
    def dn(self) -> str:
        """The leaf's own DN (a proxy DN, ending in CN=<number>, for a proxy)."""
        return dn_slash(self.cert.subject)

    @property
    def identity(self) -> str:
        """The end-entity DN, which identifies the user behind any depth of proxies."""
        return end_entity_dn(self.chain)

    @property
    def not_after(self) -> dt.datetime:
        return not_after(self.chain)

    def time_left(self, now: dt.datetime | None = None) -> dt.timedelta:
        return time_left(self.chain, now)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def parse_proxy(data: bytes, path: Path | None = None, check_key: bool = True) -> ProxyFile:
    """A proxy from PEM bytes: certificates and one unencrypted RSA key, in any order; the
    certificate whose public key matches the key is the leaf.

    ``check_key=False`` skips OpenSSL's RSA consistency check (about 50 ms per key): for
    reading proxies whose time left is all that matters, hundreds of users per pass."""
    where = f"{path}: " if path else ""
    certs = load_certificates(data)
    if not certs:
        raise ProxyError(f"{where}no certificate found")
    key_match = re.search(rb"-----BEGIN (?:RSA )?PRIVATE KEY-----.+?-----END (?:RSA )?PRIVATE KEY-----", data, re.S)
    if not key_match:
        raise ProxyError(f"{where}no unencrypted private key found")
    try:
        key = serialization.load_pem_private_key(key_match.group(0), password=None,
                                                 unsafe_skip_rsa_key_validation=not check_key)
    except (ValueError, TypeError) as exc:
        raise ProxyError(f"{where}unreadable private key: {exc}") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ProxyError(f"{where}the private key is not RSA")
    modulus = key.public_key().public_numbers().n
    for i, cert in enumerate(certs):
        pub = cert.public_key()
        if isinstance(pub, rsa.RSAPublicKey) and pub.public_numbers().n == modulus:
            return ProxyFile(path, cert, key, tuple(certs[:i] + certs[i + 1:]))
    raise ProxyError(f"{where}the private key matches none of the certificates")


def load_proxy(path: str | os.PathLike) -> ProxyFile:
    """Read a grid proxy file (X509_USER_PROXY layout: cert, key, chain)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProxyError(f"{path}: {exc.strerror or exc}") from exc
    return parse_proxy(data, path)


class TrustStore:
    """The CA certificates of a grid CA folder, indexed by subject; reloaded when the folder
    changes (CA updates land as new files, so the folder's mtime moves)."""

    def __init__(self, ca_dir: str | os.PathLike):
        self.ca_dir = Path(ca_dir)
        self._lock = threading.Lock()
        self._stamp: float | None = None
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}

    def _load(self) -> None:
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        seen: set[bytes] = set()
        for entry in sorted(self.ca_dir.iterdir()):
            if not (re.fullmatch(r"[0-9a-f]{8}\.\d+", entry.name) or entry.suffix in (".pem", ".crt")):
                continue
            try:
                certs = load_certificates(entry.read_bytes())
            except (OSError, ProxyError):
                continue
            for cert in certs:
                fp = cert.fingerprint(cert.signature_hash_algorithm or _sha256())
                if fp in seen:
                    continue
                seen.add(fp)
                by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
        self._by_subject = by_subject

    def issuers_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        try:
            stamp = self.ca_dir.stat().st_mtime
        except OSError as exc:
            raise ProxyError(f"CA folder {self.ca_dir}: {exc.strerror or exc}") from exc
        with self._lock:
            if stamp != self._stamp:
                self._load()
                self._stamp = stamp
            return list(self._by_subject.get(cert.issuer.public_bytes(), ()))


def _sha256():
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


_stores: dict[Path, TrustStore] = {}
_stores_lock = threading.Lock()


def trust_store(ca_dir: str | os.PathLike) -> TrustStore:
    """One shared TrustStore per folder."""
    key = Path(ca_dir).resolve()
    with _stores_lock:
        if key not in _stores:
            _stores[key] = TrustStore(key)
        return _stores[key]


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _check_proxy_shape(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """RFC 3820 §3.4: a proxy's subject is its issuer's subject plus one CN."""
    rdns = cert.subject.rdns
    if list(rdns[:-1]) != list(issuer.subject.rdns):
        raise ProxyError(f"proxy {dn_slash(cert.subject)} is not named after its issuer {dn_slash(issuer.subject)}")
    last = list(rdns[-1])
    if len(last) != 1 or last[0].oid != NameOID.COMMON_NAME:
        raise ProxyError(f"proxy {dn_slash(cert.subject)} does not end with a single CN")
    ext = cert.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    if not ext.critical:
        raise ProxyError(f"proxy {dn_slash(cert.subject)}: proxyCertInfo is not critical")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def validate_chain(
    chain: Sequence[x509.Certificate],
    ca_dir: str | os.PathLike | TrustStore,
    *,
    now: dt.datetime | None = None,
) -> x509.Certificate:
    """Check a leaf-first chain up to a CA of ``ca_dir``; return the end-entity certificate.

    Accepts any depth of RFC 3820 proxies above one end-entity certificate, optional
    intermediate CAs, and a trailing copy of the root. Every certificate must be within its
    validity period, signed by the next one, and proxies must be named after their issuer.
    Raises ProxyError naming the certificate at fault.
    """
    if not chain:
        raise ProxyError("no certificate presented")
    store = ca_dir if isinstance(ca_dir, TrustStore) else trust_store(ca_dir)
    now = now or dt.datetime.now(dt.UTC)
    for cert in chain:
        if cert.not_valid_before_utc > now:
            raise ProxyError(f"{dn_slash(cert.subject)} is not valid before {cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}")
        if cert.not_valid_after_utc < now:
            raise ProxyError(f"{dn_slash(cert.subject)} expired at {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}")
    eec_index = None
    for i, cert in enumerate(chain):
        proxy = is_proxy(cert)
        if eec_index is None and not proxy:
            eec_index = i
        elif eec_index is not None and proxy:
            raise ProxyError(f"proxy {dn_slash(cert.subject)} issued a non-proxy certificate")
        elif eec_index is not None and i > eec_index and not _is_ca(cert):
            raise ProxyError(f"{dn_slash(cert.subject)} is above the end-entity certificate but is not a CA")
        if i + 1 < len(chain):
            issuer = chain[i + 1]
            if cert.issuer != issuer.subject or not _signed_by(cert, issuer):
                raise ProxyError(f"{dn_slash(cert.subject)} is not signed by {dn_slash(issuer.subject)}")
            if proxy:
                _check_proxy_shape(cert, issuer)
        else:
            if proxy:
                raise ProxyError(f"the chain ends with proxy {dn_slash(cert.subject)}: its issuer is missing")
            trusted = store.issuers_of(cert)
            if cert.issuer == cert.subject and any(t == cert for t in trusted):
                break
            for ca in trusted:
                if _signed_by(cert, ca) and ca.not_valid_after_utc >= now:
                    break
            else:
                raise ProxyError(f"{dn_slash(cert.subject)}: issuer {dn_slash(cert.issuer)} is not a trusted CA")
    return _finish(chain, eec_index)


def _finish(chain: Sequence[x509.Certificate], eec_index: int | None) -> x509.Certificate:
    if eec_index is None:
        raise ProxyError("the chain holds only proxy certificates, no end-entity certificate")
    return chain[eec_index]
