"""X.509 for grid-style authentication: a throwaway PKI (``aso.x509.pki``) and proxy reading
and validation (``aso.x509.proxy``)."""

from aso.x509.pki import (
    CertificateAuthority,
    Credential,
    install_ca,
    load_ca,
    make_ca,
    make_host_cert,
    make_proxy,
    make_user_cert,
)
from aso.x509.proxy import (
    ProxyError,
    ProxyFile,
    dn_slash,
    end_entity,
    end_entity_dn,
    is_proxy,
    load_certificates,
    load_proxy,
    not_after,
    parse_proxy,
    subject_hash,
    time_left,
    validate_chain,
)

__all__ = [
    "CertificateAuthority",
    "Credential",
    "ProxyError",
    "ProxyFile",
    "dn_slash",
    "end_entity",
    "end_entity_dn",
    "install_ca",
    "is_proxy",
    "load_ca",
    "load_certificates",
    "load_proxy",
    "make_ca",
    "make_host_cert",
    "make_proxy",
    "make_user_cert",
    "not_after",
    "parse_proxy",
    "subject_hash",
    "time_left",
    "validate_chain",
]
