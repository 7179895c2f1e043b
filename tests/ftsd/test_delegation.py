"""Delegation: FTS3's delegation id, the CSR, chain checks on PUT, the 419 rules, and the
whole exchange over HTTPS with the official fts3 client library and with plain requests."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from aso.ftsd.credentials_store import CredentialStore
from aso.ftsd.delegation import (
    build_delegated_proxy,
    new_request,
    pending_request,
    require_usable_delegation,
)
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.identity import Identity, delegation_id, identity_from_environ, vos_from_fqans
from aso.x509.pki import Credential, make_proxy
from aso.x509.proxy import load_certificates
from tests.pki import sign_delegation_request, x509_test_server

UTC = dt.UTC


def test_delegation_id_matches_fts3_known_value():
    assert delegation_id("/DC=ch/DC=cern/CN=Test User", ["/testvo/Role=NULL/Capability=NULL"]) == "90f4d557057d3ac9"
    assert delegation_id("/DC=ch/DC=cern/CN=Test User") == hashlib.sha1(b"/DC=ch/DC=cern/CN=Test User").hexdigest()[:16]
    assert vos_from_fqans(("/cms/Role=production/Capability=NULL", "/cms/escms"), "x") == ("cms",)
    assert vos_from_fqans((), "abcd") == ("abcd",)


def _environ(cred: Credential, verify: str = "SUCCESS") -> dict:
    chain = [cred.cert, *cred.chain]
    env = {"SSL_CLIENT_VERIFY": verify, "SSL_CLIENT_CERT": chain[0].public_bytes(serialization.Encoding.PEM).decode()}
    for i, c in enumerate(chain[1:]):
        env[f"SSL_CLIENT_CERT_CHAIN_{i}"] = c.public_bytes(serialization.Encoding.PEM).decode()
    return env


def test_identity_is_the_end_entity_for_certificate_proxy_and_proxy_of_proxy(pki):
    alice = pki.alice
    p2 = make_proxy(alice.proxy)
    ids = [identity_from_environ(_environ(c)) for c in (alice.cert, alice.proxy, p2)]
    assert {i.user_dn for i in ids} == {alice.dn}
    assert {i.delegation_id for i in ids} == {delegation_id(alice.dn)}
    assert ids[2].vos == (delegation_id(alice.dn),) and ids[2].method == "certificate"
    assert len(ids[2].chain_pem) == 3
    assert identity_from_environ(_environ(alice.proxy, verify="NONE")) is None
    assert identity_from_environ({}) is None


def test_request_is_a_self_signed_2048_bit_csr():
    csr_pem, key_pem = new_request()
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Dummy"
    assert csr.public_key().key_size == 2048
    assert isinstance(csr.signature_hash_algorithm, hashes.SHA256)
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    assert key.public_key().public_numbers() == csr.public_key().public_numbers()


def _identity(user) -> Identity:
    dlg = delegation_id(user.dn)
    return Identity(user.dn, (), (dlg,), dlg, "certificate", ())


def test_pending_request_is_cached_per_delegation_and_dn(pki, tmp_path):
    store = CredentialStore(tmp_path / "db.sqlite")
    first = pending_request(store, _identity(pki.alice))
    assert pending_request(store, _identity(pki.alice)).csr_pem == first.csr_pem
    assert pending_request(store, _identity(pki.bob)).csr_pem != first.csr_pem


def test_put_chain_checks(pki, tmp_path):
    store = CredentialStore(tmp_path / "db.sqlite")
    alice = pki.alice
    pending = pending_request(store, _identity(alice))
    good = sign_delegation_request(pending.csr_pem, alice.proxy, hours=48)
    proxy_pem, termination = build_delegated_proxy(pending, good, alice.dn)
    # the 48 h certificate outlives alice's 12 h proxy: the chain's minimum counts
    assert termination == alice.proxy.cert.not_valid_after_utc
    stored = load_certificates(proxy_pem.encode())
    assert [c.subject for c in stored[1:]] == [alice.proxy.cert.subject, alice.cert.cert.subject]
    assert "RSA PRIVATE KEY" in proxy_pem

    # signed over another key than the one the request was made for
    other_csr, _ = new_request()
    wrong_key = sign_delegation_request(other_csr, alice.proxy)
    with pytest.raises(FtsHttpError) as err:
        build_delegated_proxy(pending, wrong_key, alice.dn)
    assert err.value.status == 400 and "does not match the private key" in err.value.message

    with pytest.raises(FtsHttpError, match="at least 2 certificates"):
        build_delegated_proxy(pending, good.split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n", alice.dn)

    # bob signing alice's request is bob's credential, not alice's
    bobs = sign_delegation_request(pending.csr_pem, pki.bob.proxy)
    with pytest.raises(FtsHttpError, match="belongs to /DC=org/DC=aso-test/OU=Users/CN=bob"):
        build_delegated_proxy(pending, bobs, alice.dn)

    # a chain whose first certificate is not signed by the second
    certs = load_certificates(good)
    swapped = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (certs[0], pki.bob.proxy.cert, *certs[2:]))
    with pytest.raises(FtsHttpError, match="is not signed by"):
        build_delegated_proxy(pending, swapped, alice.dn)


def test_require_usable_delegation_rules(pki, tmp_path):
    store = CredentialStore(tmp_path / "db.sqlite")
    ident = _identity(pki.alice)
    with pytest.raises(FtsHttpError) as err:
        require_usable_delegation(store, ident)
    assert (err.value.status, err.value.message) == (419, f'No delegation found for "{pki.alice.dn}"')
    end = dt.datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    store.save(ident.delegation_id, ident.user_dn, "PEM", (), end)
    assert require_usable_delegation(store, ident, now=end - dt.timedelta(hours=2)).termination_time == end
    with pytest.raises(FtsHttpError, match="less than one hour left") as err:
        require_usable_delegation(store, ident, now=end - dt.timedelta(minutes=59))
    assert err.value.status == 419
    with pytest.raises(FtsHttpError, match="expired 90 seconds ago") as err:
        require_usable_delegation(store, ident, now=end + dt.timedelta(seconds=90))
    assert err.value.status == 419
    # another user's delegation does not count
    with pytest.raises(FtsHttpError, match="No delegation found"):
        require_usable_delegation(store, _identity(pki.bob), now=end - dt.timedelta(hours=2))
    local = Identity("/CN=local", (), ("local",), "local", "unauthenticated", ())
    assert require_usable_delegation(store, local) is None
    assert store.delete(ident.delegation_id, ident.user_dn) is True
    assert store.delete(ident.delegation_id, ident.user_dn) is False


# -- over HTTPS: aso's TLS server, identity and delegation blueprint ----------------------


@pytest.fixture(scope="module")
def server(pki, tmp_path_factory):
    with x509_test_server(pki, tmp_path_factory.mktemp("deleg")) as srv:
        yield srv


def _get(server, user_proxy, path, **kw):
    return requests.get(server.url + path, cert=(str(user_proxy), str(user_proxy)), verify=str(server.ca_dir), timeout=30, **kw)


def test_official_client_library_delegates(server, pki, tmp_path, monkeypatch):
    from fts3.rest.client import Context
    from fts3.rest.client import easy as fts3

    monkeypatch.setenv("X509_CERT_DIR", str(pki.ca_dir))
    user = pki.add_user("carol")
    ctx = Context(server.url, ucert=str(user.proxy_path), ukey=str(user.proxy_path), verify=True)
    who = fts3.whoami(ctx)
    assert who["delegation_id"] == delegation_id(user.dn) and who["user_dn"] == user.dn
    assert fts3.delegate(ctx, lifetime=dt.timedelta(hours=48)) == who["delegation_id"]
    got = _get(server, user.proxy_path, f"/delegation/{who['delegation_id']}").json()
    # the client's certificate would live 48 h; the chain under it ends with the 12 h proxy
    expected = user.proxy.cert.not_valid_after_utc.replace(tzinfo=None).strftime("%Y-%m-%dT%H:%M:%S")
    assert got == {"termination_time": expected, "voms_attrs": []}
    # a second call finds the delegation still good and does not delegate again
    assert fts3.delegate(ctx, lifetime=dt.timedelta(hours=48)) == who["delegation_id"]


def test_delegation_over_requests(server, pki):
    user = pki.add_user("dave")
    proxy = user.proxy_path
    dlg = delegation_id(user.dn)
    none_old = _get(server, proxy, f"/delegation/{dlg}", headers={"User-Agent": "python-requests/2"})
    none_new = _get(server, proxy, f"/delegation/{dlg}", headers={"User-Agent": "fts-python-bindings/3.14.2"})
    assert (none_old.status_code, none_old.json()) == (200, None)
    assert (none_new.status_code, none_new.json()) == (200, [])

    req = _get(server, proxy, f"/delegation/{dlg}/request")
    assert req.status_code == 200 and req.headers["X-Delegation-ID"] == dlg
    assert req.headers["Content-Type"].startswith("text/plain")
    csr = x509.load_pem_x509_csr(req.content)
    assert csr.is_signature_valid and csr.public_key().key_size == 2048
    assert _get(server, proxy, f"/delegation/{dlg}/request").text == req.text  # re-served while cached

    put = lambda body: requests.put(  # noqa: E731
        f"{server.url}/delegation/{dlg}/credential", data=body, cert=(str(proxy), str(proxy)),
        verify=str(server.ca_dir), timeout=30,
    )
    other_csr, _ = new_request()
    bad = put(sign_delegation_request(other_csr, user.proxy))
    assert bad.status_code == 400 and bad.json()["message"].startswith("Could not process the proxy:")
    # a chain whose earliest expiry is a middle certificate: that is the termination time
    short = make_proxy(user.cert, hours=5)
    ok = put(sign_delegation_request(req.text, short, hours=48))
    assert ok.status_code == 201 and ok.text == ""
    got = _get(server, proxy, f"/delegation/{dlg}").json()
    assert got["termination_time"] == short.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")

    # another user's delegation id
    foreign = delegation_id(pki.alice.dn)
    for path in (f"/delegation/{foreign}", f"/delegation/{foreign}/request"):
        resp = _get(server, proxy, path)
        assert resp.status_code == 403 and resp.json()["status"] == "403 Forbidden"
    resp = requests.put(f"{server.url}/delegation/{foreign}/credential", data=b"x", cert=(str(proxy), str(proxy)),
                        verify=str(server.ca_dir), timeout=30)
    assert resp.status_code == 403

    gone = requests.delete(f"{server.url}/delegation/{dlg}", cert=(str(proxy), str(proxy)), verify=str(server.ca_dir), timeout=30)
    assert gone.status_code == 204
    assert _get(server, proxy, f"/delegation/{dlg}").json() is None


def _delegate_chain(server, user, chain_cred, proxy_path, hours):
    dlg = delegation_id(user.dn)
    csr = _get(server, proxy_path, f"/delegation/{dlg}/request").text
    resp = requests.put(f"{server.url}/delegation/{dlg}/credential", data=sign_delegation_request(csr, chain_cred, hours=hours),
                        cert=(str(proxy_path), str(proxy_path)), verify=str(server.ca_dir), timeout=30)
    assert resp.status_code == 201, resp.text


def test_what_was_delegated_decides_the_419(server, pki):
    """The rule POST /jobs applies, on credentials delegated over HTTPS."""
    user = pki.add_user("erin")
    store = CredentialStore(server.db)
    ident = identity_from_environ(_environ(user.proxy))
    with pytest.raises(FtsHttpError, match="No delegation found"):
        require_usable_delegation(store, ident)
    # delegated from a proxy with 30 minutes left
    _delegate_chain(server, user, make_proxy(user.cert, hours=0.5), user.proxy_path, hours=48)
    with pytest.raises(FtsHttpError, match="less than one hour left"):
        require_usable_delegation(store, ident)
    # delegated from a proxy that has ended by the time of the submission
    now = dt.datetime.now(UTC).replace(microsecond=0)
    brief = make_proxy(user.cert, not_before=now - dt.timedelta(minutes=5), not_after=now + dt.timedelta(seconds=30))
    _delegate_chain(server, user, brief, user.proxy_path, hours=48)
    with pytest.raises(FtsHttpError, match="expired 30 seconds ago"):
        require_usable_delegation(store, ident, now=brief.cert.not_valid_after_utc + dt.timedelta(seconds=30))
    _delegate_chain(server, user, user.proxy, user.proxy_path, hours=48)
    cred = require_usable_delegation(store, ident)
    assert cred.termination_time == user.proxy.cert.not_valid_after_utc
    # the stored proxy is a usable grid proxy of the user
    from aso.x509.proxy import parse_proxy, validate_chain

    stored = parse_proxy(cred.proxy_pem.encode())
    assert stored.identity == user.dn
    assert validate_chain(stored.chain, pki.ca_dir) == user.cert.cert


def test_official_command_line_tools_whoami_and_delegate(server, pki):
    import subprocess

    user = pki.add_user("heidi")
    env = {**os.environ, "X509_USER_PROXY": str(user.proxy_path), "X509_CERT_DIR": str(server.ca_dir)}

    def run(*args: str) -> str:
        res = subprocess.run([*args[:1], "-s", server.url, *args[1:]], capture_output=True, text=True, env=env, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout + res.stderr

    dlg = delegation_id(user.dn)
    out = run("fts-rest-whoami")
    assert f"User DN: {user.dn}" in out and dlg in out
    assert json.loads(run("fts-rest-whoami", "-j"))["delegation_id"] == dlg
    assert dlg in run("fts-rest-delegate", "-H", "24")
    first = _get(server, user.proxy_path, f"/delegation/{dlg}").json()["termination_time"]
    assert first == user.proxy.cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S")
    assert dlg in run("fts-rest-delegate", "-f")
