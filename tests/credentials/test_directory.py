"""The directory source: one proxy file per user, checked, copied to the 0600 cache."""

from __future__ import annotations

import itertools

import pytest

from aso.credentials import DirectoryProxySource, NoProxy

_names = itertools.count()


@pytest.fixture
def source(tmp_path):
    (tmp_path / "proxies").mkdir()
    return DirectoryProxySource(tmp_path / "proxies", tmp_path / "cache", min_time_left=3600)


def test_a_good_proxy_is_cached_private_and_reused(pki, source):
    user = pki.add_user(f"dir{next(_names)}")
    pki.proxy(user.cert, source.directory / f"{user.name}.pem", hours=6)
    path = source.get_proxy(user.name)
    assert path == source.cache_path(user.name) and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == (source.directory / f"{user.name}.pem").read_bytes()
    (source.directory / f"{user.name}.pem").unlink()  # the cache alone serves the next call
    assert source.get_proxy(user.name) == path


@pytest.mark.parametrize("case, reason", [
    ("missing", "does not exist"),
    ("expired", "expired"),
    ("short", "less than the 3600 s required"),
    ("garbage", "not a usable proxy"),
])
def test_unusable_proxies_name_the_reason(pki, source, case, reason):
    user = pki.add_user(f"dir{next(_names)}")
    target = source.directory / f"{user.name}.pem"
    if case == "expired":
        pki.proxy(user.cert, target, expired=True)
    elif case == "short":
        pki.proxy(user.cert, target, hours=0.25)
    elif case == "garbage":
        target.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(NoProxy, match=reason) as err:
        source.get_proxy(user.name)
    assert err.value.username == user.name
    assert not source.cache_path(user.name).exists()


def test_a_user_name_that_would_escape_the_folder_is_refused(source):
    with pytest.raises(Exception, match="user"):
        source.get_proxy("../etc")
