"""Loading proxies and validating chains against a CA folder."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from aso.x509.pki import make_ca, make_proxy, make_user_cert, new_key
from aso.x509.proxy import (
    ProxyError,
    end_entity_dn,
    is_proxy,
    load_proxy,
    parse_proxy,
    time_left,
    validate_chain,
)


def test_load_proxy_gives_leaf_chain_and_end_entity_dn(pki, tmp_path):
    p2, path = pki.proxy(pki.alice.proxy, tmp_path / "p2.pem", hours=3)
    loaded = load_proxy(path)
    assert loaded.cert == p2.cert
    assert loaded.issuers == (pki.alice.proxy.cert, pki.alice.cert.cert)
    assert loaded.dn == p2.dn
    assert loaded.identity == pki.alice.dn == "/DC=org/DC=aso-test/OU=Users/CN=alice"
    assert dt.timedelta(hours=2, minutes=59) < loaded.time_left() <= dt.timedelta(hours=3)
    assert loaded.not_after == p2.cert.not_valid_after_utc
    assert is_proxy(loaded.cert) and not is_proxy(pki.alice.cert.cert)


def test_time_left_is_the_minimum_over_the_chain(pki):
    long_proxy = make_proxy(pki.alice.proxy, hours=100)  # outlives its 12 h issuer
    left = time_left((long_proxy.cert, *long_proxy.chain))
    assert left <= dt.timedelta(hours=12)


def test_proxy_file_without_key_or_with_foreign_key_is_refused(pki, tmp_path):
    only_certs = pki.alice.proxy.cert_pem() + pki.alice.proxy.chain_pem()
    with pytest.raises(ProxyError, match="no unencrypted private key"):
        parse_proxy(only_certs)
    with pytest.raises(ProxyError, match="matches none"):
        parse_proxy(only_certs + pki.bob.proxy.key_pem())
    with pytest.raises(ProxyError, match="No such file"):
        load_proxy(tmp_path / "missing.pem")


def test_validate_chain_accepts_user_cert_proxy_and_proxy_of_proxy(pki):
    alice = pki.alice
    assert validate_chain([alice.cert.cert], pki.ca_dir) == alice.cert.cert
    p1 = alice.proxy
    assert validate_chain([p1.cert, *p1.chain], pki.ca_dir) == alice.cert.cert
    p2 = make_proxy(p1)
    p3 = make_proxy(p2)
    assert validate_chain([p3.cert, *p3.chain], pki.ca_dir) == alice.cert.cert
    assert end_entity_dn([p3.cert, *p3.chain]) == alice.dn
    # a client may send the root CA too
    assert validate_chain([p2.cert, *p2.chain, pki.ca.cert], pki.ca_dir) == alice.cert.cert


def test_validate_chain_refuses_expired_proxy(pki):
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    old = make_proxy(pki.alice.cert, not_before=now - dt.timedelta(hours=3), not_after=now - dt.timedelta(seconds=5))
    with pytest.raises(ProxyError, match="expired"):
        validate_chain([old.cert, *old.chain], pki.ca_dir)


def test_validate_chain_refuses_unknown_ca(pki, tmp_path):
    other = make_ca(tmp_path / "other", dn="/DC=org/DC=elsewhere/CN=Other CA")
    mallory = make_user_cert(other, "mallory")
    proxy = make_proxy(mallory)
    with pytest.raises(ProxyError, match="not a trusted CA"):
        validate_chain([proxy.cert, *proxy.chain], pki.ca_dir)


def test_validate_chain_refuses_missing_issuer_and_forged_signature(pki):
    p1 = pki.alice.proxy
    with pytest.raises(ProxyError, match="issuer is missing"):
        validate_chain([p1.cert], pki.ca_dir)
    # a "proxy" of alice signed by bob's key, claiming alice as issuer
    forged = (
        x509.CertificateBuilder()
        .subject_name(p1.cert.subject)
        .issuer_name(pki.alice.cert.cert.subject)
        .public_key(new_key().public_key())
        .serial_number(7)
        .not_valid_before(p1.cert.not_valid_before_utc)
        .not_valid_after(p1.cert.not_valid_after_utc)
        .add_extension(p1.cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")).value, critical=True)
        .sign(pki.bob.cert.key, hashes.SHA256())
    )
    with pytest.raises(ProxyError, match="is not signed by"):
        validate_chain([forged, pki.alice.cert.cert], pki.ca_dir)


def test_validate_chain_refuses_proxy_not_named_after_its_issuer(pki):
    p1 = pki.alice.proxy
    bad = (
        x509.CertificateBuilder()
        .subject_name(pki.bob.cert.cert.subject)  # pretends to be bob
        .issuer_name(pki.alice.cert.cert.subject)
        .public_key(new_key().public_key())
        .serial_number(8)
        .not_valid_before(p1.cert.not_valid_before_utc)
        .not_valid_after(p1.cert.not_valid_after_utc)
        .add_extension(p1.cert.extensions.get_extension_for_oid(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")).value, critical=True)
        .sign(pki.alice.cert.key, hashes.SHA256())
    )
    with pytest.raises(ProxyError, match="not named after its issuer"):
        validate_chain([bad, pki.alice.cert.cert], pki.ca_dir)


def test_validate_chain_refuses_user_cert_issuing_a_user_cert(pki):
    # an end-entity certificate signed by another end entity (not a proxy) is not trusted
    fake = (
        x509.CertificateBuilder()
        .subject_name(pki.bob.cert.cert.subject)
        .issuer_name(pki.alice.cert.cert.subject)
        .public_key(new_key().public_key())
        .serial_number(9)
        .not_valid_before(pki.alice.cert.cert.not_valid_before_utc)
        .not_valid_after(pki.alice.cert.cert.not_valid_after_utc)
        .sign(pki.alice.cert.key, hashes.SHA256())
    )
    with pytest.raises(ProxyError, match="not a CA"):
        validate_chain([fake, pki.alice.cert.cert], pki.ca_dir)
