"""A throwaway X.509 PKI: a CA folder laid out like /etc/grid-security/certificates, host and
user certificates, and RFC 3820 proxy certificates (also proxies of proxies).

Meant for tests, demos and the single-machine setup, where no real grid CA exists. Keys are
RSA 2048 (OpenSSL's default security level refuses anything smaller in TLS).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aso.x509.proxy import PROXY_CERT_INFO_OID, dn_slash, subject_hash

#: proxyCertInfo value for "inherit all" with no path length: SEQUENCE { SEQUENCE { OID
#: id-ppl-inheritAll (1.3.6.1.5.5.7.21.1) } }, DER-encoded by hand because `cryptography` has
#: no type for this extension.
INHERIT_ALL_PROXY_CERT_INFO = bytes.fromhex("300c300a06082b06010505071501")

#: The subject prefix of every certificate this module issues, unless told otherwise.
DEFAULT_BASE = (("DC", "org"), ("DC", "aso-test"))

_ATTRIBUTE_OIDS = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
}


def _now() -> dt.datetime:
    # X.509 has second resolution; dropping microseconds keeps notBefore <= "now" exact.
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_name(parts: Sequence[tuple[str, str]]) -> x509.Name:
    """An X.509 name from (short name, value) pairs in slash-DN order (most significant first)."""
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(_ATTRIBUTE_OIDS[k], v)]) for k, v in parts])


def parse_dn(dn: str) -> x509.Name:
    """``/DC=org/DC=aso-test/CN=Alice`` -> x509.Name (values may not contain '/')."""
    if not dn.startswith("/"):
        raise ValueError(f"DN must be in slash form, got {dn!r}")
    parts = []
    for piece in dn[1:].split("/"):
        key, sep, value = piece.partition("=")
        if not sep or key not in _ATTRIBUTE_OIDS:
            raise ValueError(f"cannot parse {piece!r} in DN {dn!r}")
        parts.append((key, value))
    return make_name(parts)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    # Traditional "RSA PRIVATE KEY" form: what grid tools (voms-proxy-init, myproxy) write
    # and what every consumer (M2Crypto, GSI, requests) reads.
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def write_private(path: str | os.PathLike, data: bytes, mode: int = 0o600) -> Path:
    """Write atomically (temp file, fsync, rename) with the given mode from the start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class Credential:
    """A certificate, its private key, and the certificates above it (issuer first, no root CA)."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def dn(self) -> str:
        return dn_slash(self.cert.subject)

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return _pem_key(self.key)

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def proxy_pem(self) -> bytes:
        """Grid proxy file layout: certificate, private key, then the issuing chain."""
        return self.cert_pem() + self.key_pem() + self.chain_pem()

    def write_cert_and_key(self, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> tuple[Path, Path]:
        """usercert.pem/userkey.pem style: the certificate (plus chain) 0644, the key 0600."""
        return (write_private(cert_path, self.cert_pem() + self.chain_pem(), 0o644),
                write_private(key_path, self.key_pem(), 0o600))

    def write_proxy(self, path: str | os.PathLike) -> Path:
        """A proxy file (cert + key + chain, mode 0600) as X509_USER_PROXY expects."""
        return write_private(path, self.proxy_pem(), 0o600)


@dataclass(frozen=True)
class CertificateAuthority:
    """A self-signed CA whose certificate is installed in a grid-style CA folder."""

    credential: Credential
    ca_dir: Path

    @property
    def cert(self) -> x509.Certificate:
        return self.credential.cert

    @property
    def key(self) -> rsa.RSAPrivateKey:
        return self.credential.key

    @property
    def dn(self) -> str:
        return self.credential.dn

    @property
    def hash(self) -> str:
        return subject_hash(self.cert)

    @property
    def cert_path(self) -> Path:
        return self.ca_dir / f"{self.hash}.0"

    def issue(
        self,
        subject: x509.Name,
        *,
        days: float = 365,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        server: bool = False,
        client: bool = True,
        san_dns: Sequence[str] = (),
        san_ip: Sequence[str] = (),
        key: rsa.RSAPrivateKey | None = None,
    ) -> Credential:
        """An end-entity certificate signed by this CA."""
        key = key or new_key()
        start = not_before or _now() - dt.timedelta(minutes=5)
        end = not_after or start + dt.timedelta(days=days)
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=True, key_agreement=False, key_cert_sign=False, crl_sign=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if usages:
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in san_dns]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in san_ip]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return Credential(builder.sign(self.key, hashes.SHA256()), key, ())


def make_ca(
    ca_dir: str | os.PathLike,
    *,
    dn: str = "/DC=org/DC=aso-test/CN=ASO Test CA",
    days: float = 3650,
    key_path: str | os.PathLike | None = None,
) -> CertificateAuthority:
    """Create a CA and install it in ``ca_dir`` as a grid CA folder expects.

    Writes ``<name>.pem`` plus the ``<hash>.0`` link OpenSSL looks certificates up by, and
    ``<hash>.signing_policy`` (Globus tools such as myproxy-server refuse a CA without one)
    allowing the CA to sign anything under its own DN's parent. The CA key is written only
    when ``key_path`` is given (never into ``ca_dir``, which is world-readable trust).
    """
    ca_dir = Path(ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    key = new_key()
    name = parse_dn(dn)
    start = _now() - dt.timedelta(minutes=5)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca = CertificateAuthority(Credential(cert, key, ()), ca_dir)
    install_ca(cert, ca_dir)
    if key_path is not None:
        write_private(key_path, _pem_key(key))
    return ca


def install_ca(cert: x509.Certificate, ca_dir: str | os.PathLike) -> Path:
    """Put a CA certificate into a grid CA folder: file, ``<hash>.0`` link, signing policy."""
    ca_dir = Path(ca_dir)
    ca_dir.mkdir(parents=True, exist_ok=True)
    h = subject_hash(cert)
    dn = dn_slash(cert.subject)
    pem_name = f"{dn.rsplit('=', 1)[-1].replace(' ', '_').replace('/', '_')}-{h}.pem"
    write_private(ca_dir / pem_name, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    link = ca_dir / f"{h}.0"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(pem_name)
    parent = dn.rsplit("/", 1)[0] or ""
    policy = (
        f"access_id_CA      X509         '{dn}'\n"
        "pos_rights        globus        CA:sign\n"
        f"cond_subjects     globus       '\"{parent}/*\"'\n"
    )
    write_private(ca_dir / f"{h}.signing_policy", policy.encode(), 0o644)
    return link


def load_ca(ca_dir: str | os.PathLike, cert_path: str | os.PathLike, key_path: str | os.PathLike) -> CertificateAuthority:
    """A CA made earlier by ``make_ca(..., key_path=...)``."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path}: not an RSA key")
    return CertificateAuthority(Credential(cert, key, ()), Path(ca_dir))


def make_host_cert(
    ca: CertificateAuthority,
    hostname: str = "localhost",
    *,
    ips: Sequence[str] = ("127.0.0.1",),
    days: float = 365,
    base: Sequence[tuple[str, str]] = DEFAULT_BASE,
) -> Credential:
    """A host certificate (server and client auth) with SAN DNS:<hostname> and IP:<ips>."""
    return ca.issue(
        make_name([*base, ("CN", hostname)]), days=days, server=True, client=True,
        san_dns=[hostname], san_ip=list(ips),
    )


def make_user_cert(
    ca: CertificateAuthority,
    name: str,
    *,
    days: float = 365,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    base: Sequence[tuple[str, str]] = (*DEFAULT_BASE, ("OU", "Users")),
) -> Credential:
    """A user (end-entity) certificate ``<base>/CN=<name>``; pass ``not_after`` in the past
    (with an earlier ``not_before``) for an expired one."""
    return ca.issue(make_name([*base, ("CN", name)]), days=days, not_before=not_before,
                    not_after=not_after, server=False, client=True)


def make_proxy(
    issuer: Credential,
    *,
    hours: float = 12,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    serial: int | None = None,
    key: rsa.RSAPrivateKey | None = None,
    bits: int = 2048,
) -> Credential:
    """An RFC 3820 proxy of ``issuer`` (a user certificate or another proxy).

    Subject = issuer subject + ``CN=<serial>``; proxyCertInfo critical with inheritAll; the
    returned credential's chain is the issuer followed by the issuer's own chain, so
    ``write_proxy`` produces a complete grid proxy file. The proxy may outlive its issuer,
    as real tools allow; validators take the minimum over the chain.
    """
    key = key or new_key(bits)
    serial = serial if serial is not None else secrets.randbelow(2**31 - 1) + 1
    start = not_before or _now() - dt.timedelta(minutes=5)
    end = not_after or _now() + dt.timedelta(hours=hours)
    subject = x509.Name([*issuer.cert.subject.rdns, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, str(serial))])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO_OID, INHERIT_ALL_PROXY_CERT_INFO), critical=True)
        .sign(issuer.key, hashes.SHA256())
    )
    return Credential(cert, key, (issuer.cert, *issuer.chain))
