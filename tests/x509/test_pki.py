"""The throwaway PKI: CA folder layout, host and user certificates, RFC 3820 proxies, checked
with the openssl command and M2Crypto (what the official fts3 client uses)."""

from __future__ import annotations

import ipaddress
import stat
import subprocess

from cryptography import x509

from aso.x509.pki import make_ca, make_host_cert, make_proxy, make_user_cert
from aso.x509.proxy import PROXY_CERT_INFO_OID, dn_slash, load_certificates


def openssl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)


def test_ca_folder_has_hash_link_and_signing_policy(pki):
    h = openssl("x509", "-hash", "-noout", "-in", str(pki.ca.cert_path)).stdout.strip()
    assert h == pki.ca.hash
    link = pki.ca_dir / f"{h}.0"
    assert link.is_symlink() and (pki.ca_dir / link.readlink()).is_file()
    policy = (pki.ca_dir / f"{h}.signing_policy").read_text()
    assert "access_id_CA      X509         '/DC=org/DC=aso-test/CN=ASO Test CA'" in policy
    assert "cond_subjects     globus       '\"/DC=org/DC=aso-test/*\"'" in policy
    assert stat.S_IMODE(pki.ca_key_path.stat().st_mode) == 0o600
    assert not any("key" in p.name for p in pki.ca_dir.iterdir())


def test_host_certificate_names_localhost_and_loopback(pki):
    assert openssl("verify", "-CApath", str(pki.ca_dir), str(pki.host_cert_path)).returncode == 0
    san = pki.host.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert stat.S_IMODE(pki.host_key_path.stat().st_mode) == 0o600


def test_user_certificate(pki):
    assert pki.alice.dn == "/DC=org/DC=aso-test/OU=Users/CN=alice"
    assert openssl("verify", "-CApath", str(pki.ca_dir), str(pki.alice.cert_path)).returncode == 0


def test_proxy_is_rfc3820_inherit_all(pki):
    proxy = pki.alice.proxy
    ext = proxy.cert.extensions.get_extension_for_oid(PROXY_CERT_INFO_OID)
    assert ext.critical
    text = openssl("x509", "-noout", "-text", "-in", str(pki.alice.proxy_path)).stdout
    assert "Proxy Certificate Information: critical" in text
    assert "Policy Language: Inherit all" in text
    assert proxy.dn == f"{pki.alice.dn}/CN={proxy.cert.serial_number}"
    assert proxy.cert.issuer == pki.alice.cert.cert.subject


def test_proxy_file_layout_and_openssl_accepts_only_with_proxy_flag(pki, tmp_path):
    p2, path = pki.proxy(pki.alice.proxy, tmp_path / "p2.pem")
    data = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # cert, key, then the chain: proxy of proxy, proxy, user certificate
    assert data.index(b"CERTIFICATE") < data.index(b"RSA PRIVATE KEY")
    assert [dn_slash(c.subject) for c in load_certificates(data)] == [p2.dn, pki.alice.proxy.dn, pki.alice.dn]
    ok = openssl("verify", "-CApath", str(pki.ca_dir), "-allow_proxy_certs", "-untrusted", str(path), str(path))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    refused = openssl("verify", "-CApath", str(pki.ca_dir), "-untrusted", str(path), str(path))
    assert refused.returncode != 0


def test_m2crypto_reads_proxy_like_the_fts3_client(pki):
    from M2Crypto import RSA, X509

    cert = X509.load_cert(str(pki.alice.proxy_path))
    key = RSA.load_key(str(pki.alice.proxy_path))
    assert cert.get_pubkey().get_rsa().n == key.n
    assert cert.get_subject().as_text().startswith("DC=org, DC=aso-test, OU=Users, CN=alice, CN=")


def test_second_ca_has_distinct_folder_entries(tmp_path):
    a = make_ca(tmp_path / "certs", dn="/DC=org/DC=one/CN=CA One")
    b = make_ca(tmp_path / "certs", dn="/DC=org/DC=two/CN=CA Two")
    assert a.hash != b.hash
    names = {p.name for p in (tmp_path / "certs").iterdir()}
    assert {f"{a.hash}.0", f"{b.hash}.0", f"{a.hash}.signing_policy", f"{b.hash}.signing_policy"} <= names
    user = make_user_cert(b, "carol")
    host = make_host_cert(a, "localhost")
    for cred in (user, host, make_proxy(user)):
        path = tmp_path / "c.pem"
        cred.write_proxy(path)
        res = openssl("verify", "-CApath", str(tmp_path / "certs"), "-allow_proxy_certs", "-untrusted", str(path), str(path))
        assert res.returncode == 0, res.stdout + res.stderr
