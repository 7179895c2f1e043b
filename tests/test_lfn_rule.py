"""The LFN rule, the PFN builder and the namespace rule: properties and unit cases."""

from __future__ import annotations

import posixpath
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aso import validate
from aso.config import Site
from aso.errors import ConfigError, ForbiddenError, ValidationError
from aso.state.auth import Identity
from aso.state.namespaces import Namespaces

PREFIXES = ["file:///data/site", "file:///data/site/", "http://storage:8080/base", "https://s.example/a%20b/",
            "root://xrootd.example//store", "file:///"]

# Near-misses: what an attacker would try, mixed with the allowed alphabet.
TRICKY = st.lists(
    st.sampled_from(["/", ".", "..", "%2e", "%2E", "%2f", "%2F", "%00", "#", "?", "\\", "a", "b.root", "_", "-",
                     "+", "~", " ", "\x00", "\n", "\u2028", "\x85", "é", "store", "user"]),
    max_size=20,
).map("".join)


def decoded_path(url: str) -> str:
    return posixpath.normpath(unquote(urlsplit(url).path))


@settings(max_examples=1000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.text(max_size=60), TRICKY, TRICKY.map(lambda s: "/" + s)), prefix=st.sampled_from(PREFIXES))
@example(value="/store/user/demo1/%2e%2e/%2e%2e/ESCAPED.root", prefix="file:///data/site")
@example(value="/a%2Fb.bin", prefix="file:///data/site")
@example(value="/h#frag.bin", prefix="http://storage:8080/base")
def test_every_accepted_lfn_maps_inside_the_prefix(value, prefix):
    try:
        validate.lfn(value)
    except ValidationError as exc:
        assert exc.field == "lfn"
        with pytest.raises(ValidationError):
            validate.pfn(prefix, value)
        return
    # accepted: plain parts only, and the URL names a file strictly below the prefix
    assert value.startswith("/") and all(p and p not in (".", "..") for p in value[1:].split("/"))
    assert all(c.isascii() and (c.isalnum() or c in "_.+-/") for c in value)
    url = validate.pfn(prefix, value)
    base = decoded_path(prefix.rstrip("/") + "/").rstrip("/") + "/"
    assert decoded_path(url).startswith(base)
    assert decoded_path(url) == posixpath.normpath(base + value.lstrip("/"))
    parts = urlsplit(url)
    assert not parts.query and not parts.fragment


@pytest.mark.parametrize("value", ["/ok/file.root", "/a/b+c-d_e.f", "/" + "x" * 999])
def test_plain_lfns_are_accepted(value):
    assert validate.lfn(value) == value


@pytest.mark.parametrize("value,problem", [
    ("", "non-empty"), ("relative/x", "absolute"), ("/a//b", "empty"), ("/a/", "empty"), ("/a/./b", "'.'"),
    ("/a/../b", "'..'"), ("/a%2e%2e", "'%'"), ("/a#b", "'#'"), ("/a?b", "'?'"), ("/a b", "' '"),
    ("/a\x7f", "\\x7f"), ("/a\u2028", "\\u2028"), ("/" + "x" * 1000, "longer"),
])
def test_bad_lfns_are_refused_saying_why(value, problem):
    with pytest.raises(ValidationError) as err:
        validate.lfn(value, "destination_lfn")
    assert err.value.field == "destination_lfn" and problem in str(err.value)


def test_site_pfn_cannot_leave_its_prefix():
    site = Site("T2_X", "file:///data/T2_X", "https://fts:8446")
    assert site.pfn("/store/user/a/x.root") == "file:///data/T2_X/store/user/a/x.root"
    with pytest.raises(ValidationError):
        site.pfn("/store/../../etc/passwd")


# -- integers ------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [10**30, str(10**30), "²", "٣", -1, "-1", 1.0, True, [1], "1e3", ""])
def test_non_negative_int_refuses_what_is_not_a_plain_bounded_integer(value):
    with pytest.raises(ValidationError):
        validate.non_negative_int(value, "n")


def test_non_negative_int_bounds():
    assert validate.non_negative_int(" 42 ", "n") == 42
    assert validate.non_negative_int(2**63 - 1, "n") == 2**63 - 1
    with pytest.raises(ValidationError, match="at most 5"):
        validate.non_negative_int(6, "n", 5)


# -- namespaces ----------------------------------------------------------------------------
def test_lfn_under_areas():
    assert validate.lfn_under("/store/temp/user/alice.123/x", "/store/temp/user/alice")
    assert validate.lfn_under("/store/temp/user/alice/x", "/store/temp/user/alice")
    assert not validate.lfn_under("/store/temp/user/alicex/x", "/store/temp/user/alice")
    assert not validate.lfn_under("/store/temp/user/alice", "/store/temp/user/alice")
    assert validate.lfn_under("/store/user/alice/x", "/store/user/alice/")
    assert not validate.lfn_under("/store/user/alice/", "/store/user/alice/")


def row(user="alice", src=None, dst=None, task="t1"):
    return {"tm_username": user, "tm_taskname": task,
            "tm_source_lfn": src or f"/store/temp/user/{user}.x/a.root", "tm_destination_lfn": dst or f"/store/user/{user}/a.root"}


ALICE, OPERATOR, SERVICE = Identity("alice", "user"), Identity("op", "operator"), Identity("svc", "service")


def test_namespace_rule_by_role():
    ns = Namespaces(groups={"alice": ("higgs",)})
    ns.check_injection(ALICE, 0, row())
    ns.check_injection(ALICE, 0, row(dst="/store/group/higgs/a.root"))
    ns.check_injection(SERVICE, 0, row(user="bob", src="/anything/x", dst="/else/y"))
    for bad, field in [(row(user="bob"), "username"), (row(src="/store/temp/user/bob/a"), "source_lfn"),
                       (row(dst="/store/user/bob/a"), "destination_lfn"), (row(dst="/store/group/top/a"), "destination_lfn"),
                       (row(task="201130_101010:bob_crab_x"), "taskname")]:
        with pytest.raises(ForbiddenError, match=field):
            ns.check_injection(ALICE, 3, bad)
    with pytest.raises(ForbiddenError, match="operator_inject"):
        ns.check_injection(OPERATOR, 0, row())
    Namespaces(operator_inject=True).check_injection(OPERATOR, 0, row(user="bob"))
    with pytest.raises(ForbiddenError):
        Namespaces(operator_inject=True).check_injection(OPERATOR, 0, row(user="bob", dst="/store/user/alice/x"))


def test_namespaces_from_config_refuse_malformed_entries():
    from aso.config import from_dict

    good = from_dict({"server": {"groups": {"alice": ["higgs"]}, "destination_areas": ["/store/user/{username}/"]}})
    assert Namespaces.from_config(good.server).destinations_of("alice") == ["/store/user/alice/"]
    for server in ({"groups": {"alice": ["../x"]}}, {"source_areas": ["relative/"]}, {"source_areas": ["/s/{group}/"]}):
        with pytest.raises(ConfigError):
            Namespaces.from_config(from_dict({"server": server}).server)


def _rule_part_by_part(value) -> bool:
    """The LFN rule as documented, one path part at a time (the reference for LFN_RE)."""
    if not isinstance(value, str) or not value or len(value) > validate.MAX_LFN or not value.startswith("/"):
        return False
    return all(part and part not in (".", "..") and validate.LFN_PART_RE.fullmatch(part)
               for part in value[1:].split("/"))


@settings(max_examples=3000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(TRICKY, TRICKY.map(lambda s: "/" + s)))
@example("/...")
@example("/..a/.b/a..")
@example("/a/../b")
@example("/a/./b")
@example("/.")
@example("/a/..")
@example("/a\n")
@example("/a/")
@example("//a")
@example("/" + "a" * 999)
@example("/" + "a" * 1000)
def test_the_one_expression_fast_path_accepts_exactly_the_rule(value):
    assert bool(validate.LFN_RE.fullmatch(value) and len(value) <= validate.MAX_LFN) == _rule_part_by_part(value)
    try:
        validate.lfn(value)
    except ValidationError:
        assert not _rule_part_by_part(value)
    else:
        assert _rule_part_by_part(value)


LFN_PARTS = st.from_regex(r"[A-Za-z0-9_.+\-]{1,8}", fullmatch=True).filter(lambda p: p not in (".", ".."))


@settings(max_examples=2000, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.builds(lambda scheme, host, path: scheme + host + path,
                        st.sampled_from(["file://", "root://", "https://", "davs://", ""]),
                        st.sampled_from(["", "h", "h:1094", "h/", "h//"]), TRICKY),
       value=st.lists(LFN_PARTS, min_size=1, max_size=5).map(lambda parts: "/" + "/".join(parts)))
@example(prefix="file:///tmp/a/..", value="/store/x")
@example(prefix="root://h", value="/store/x")
@example(prefix="file:///tmp/a%2F..", value="/x")
def test_a_prefix_taken_as_plain_keeps_every_lfn_inside_unchecked(prefix, value):
    """The PFN builder's fast path: below a prefix it takes as plain, the URL is the prefix
    and the LFN joined, unchecked; the full check (decode, normalise, compare) must agree."""
    base, inside, plain = validate._prefix_inside(prefix)
    if not plain:
        return
    url = base + value
    assert validate.pfn(prefix, value) == url
    parts = urlsplit(url)
    assert not parts.query and not parts.fragment
    assert decoded_path(url) == inside + value[1:]
