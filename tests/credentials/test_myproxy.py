"""The myproxy source against a real myproxy-server: CRAB's login name, trusted retrieval,
the 0600 cache and its reuse, and a clear NoProxy for every way retrieval can fail."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from aso.credentials.base import NoProxy
from aso.credentials.myproxy import MyProxySource, crab_credential_name
from aso.x509.proxy import load_proxy

ACCOUNT = "crab-rest.example.org"
_names = itertools.count()


def _user(pki, myproxy, store: bool = True):
    user = pki.add_user(f"mp{next(_names)}")
    if store:
        myproxy.store(crab_credential_name(user.dn, ACCOUNT), user.cert_path, user.key_path, myproxy.service_dn)
    return user


def _source(myproxy, tmp_path, users, **kw) -> MyProxySource:
    options = dict(server=myproxy.host, port=myproxy.port, service_cert=myproxy.service_cert,
                   service_key=myproxy.service_key, ca_dir=myproxy.ca_dir, user_dns={u.name: u.dn for u in users},
                   cache_dir=tmp_path / "cache", account=ACCOUNT)
    options.update(kw)
    return MyProxySource(**options)


def test_crab_credential_name():
    dn = "/DC=ch/DC=cern/OU=Users/CN=someone"
    assert crab_credential_name(dn, ACCOUNT) == hashlib.sha1(f"{dn}_{ACCOUNT}".encode()).hexdigest()
    assert crab_credential_name(dn) == hashlib.sha1(dn.encode()).hexdigest()


def test_retrieves_a_proxy_of_the_user_and_caches_it_private(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    source = _source(myproxy, tmp_path, [user], lifetime=24 * 3600)
    path = source.get_proxy(user.name)
    assert path == tmp_path / "cache" / f"{user.name}.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    proxy = load_proxy(path)  # certificate, matching key, chain
    assert proxy.identity == user.dn
    assert 23 * 3600 < proxy.time_left().total_seconds() <= 24 * 3600


def test_the_cache_is_reused_without_asking_myproxy(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    source = _source(myproxy, tmp_path, [user])
    first = source.get_proxy(user.name).read_bytes()
    # pointing the source at a port nobody listens on proves the second call never connects
    offline = _source(myproxy, tmp_path, [user], port=1)
    assert offline.get_proxy(user.name).read_bytes() == first


def test_a_cached_proxy_too_short_is_fetched_again(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    source = _source(myproxy, tmp_path, [user], min_time_left=3600)
    cache = source.cache_path(user.name)
    cache.parent.mkdir(parents=True, exist_ok=True)
    pki.proxy(user.cert, cache, hours=0.5)  # 30 min left: below the hour required
    fresh = source.get_proxy(user.name)
    assert load_proxy(fresh).time_left().total_seconds() > 3600


def test_user_without_a_configured_dn(pki, myproxy, tmp_path):
    source = _source(myproxy, tmp_path, [])
    with pytest.raises(NoProxy, match="no certificate DN configured"):
        source.get_proxy("nobody")


def test_user_with_nothing_stored(pki, myproxy, tmp_path):
    user = _user(pki, myproxy, store=False)
    source = _source(myproxy, tmp_path, [user])
    with pytest.raises(NoProxy) as err:
        source.get_proxy(user.name)
    assert crab_credential_name(user.dn, ACCOUNT) in err.value.reason
    assert f"{myproxy.host}:{myproxy.port}" in err.value.reason
    assert not source.cache_path(user.name).exists()


def test_credential_stored_under_another_account_is_not_found(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    source = _source(myproxy, tmp_path, [user], account="other-host.example.org")
    with pytest.raises(NoProxy):
        source.get_proxy(user.name)


def test_server_down(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    source = _source(myproxy, tmp_path, [user], port=1)
    with pytest.raises(NoProxy, match="connection refused"):
        source.get_proxy(user.name)


def test_a_retriever_that_is_not_trusted_gets_nothing(pki, myproxy, tmp_path):
    user = _user(pki, myproxy)
    # the user's own certificate is not the trusted retriever the credential names
    source = _source(myproxy, tmp_path, [user], service_cert=user.cert_path, service_key=user.key_path)
    with pytest.raises(NoProxy):
        source.get_proxy(user.name)
