"""aso fts-server against hostile input: URLs that would leave the roots, integers that
would overflow, JSON that would exhaust the parser, errors that would leak the code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aso.cli.common import AppContext
from aso.cli.fts_cmds import _folders
from aso.ftsd import urls
from aso.ftsd.errors import FtsHttpError
from aso.ftsd.jobs import parse_submission
from aso.ftsd.jsonbody import MAX_DEPTH, parse_json
from aso.ftsd.protocols import CopyError, destination_for, source_for
from aso.ftsd.service import FtsService, ServiceSettings
from tests.ftsd.fts import plain_fts, transfer

# -- URLs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("file:///r/dst/%2e%2e/x", "'..'"),
        ("file:///r/dst/%2E%2E/x", "'..'"),
        ("file:///r/dst/%2e/x", "'.'"),
        ("file:///r/dst/a%00b", "control character"),
        ("file:///r/dst/a\x00b", "control character"),
        ("file:///r/dst/a%0ab", "control character"),
        ("file:///r/dst/a\nb", "control character"),
        ("file:///r/dst/a%7fb", "control character"),
        ("file:///r/dst/..%2fx", "%2F"),
        ("file:///r/dst/a%2Fb", "%2F"),
        ("file:///r/dst/h#frag.bin", "fragment"),
        ("file:///r/dst/h#", "fragment"),
        ("file:///r/dst/q?x=1.bin", "query"),
        ("file:///r/dst/q?", "query"),
        ("file:///r/dst/%ff", "UTF-8"),
        ("file:///r/dst/", "folder"),
        ("file://otherhost/r/x", "local"),
    ],
)
def test_file_urls_refused_after_decoding(url, why):
    with pytest.raises(urls.UrlError, match=why.replace(".", r"\.").replace("?", r"\?")):
        urls.check_url(url)
    with pytest.raises(urls.UrlError):
        urls.file_path(url)


def test_file_path_decodes_once_and_normalises():
    assert urls.file_path("file:///r/a%20b/c%2541") == "/r/a b/c%41"  # %25 → '%', not decoded again
    assert urls.file_path("file:////r//a///b") == "/r/a/b"
    assert urls.file_path("file://localhost/r/x") == "/r/x"


@pytest.mark.parametrize("url", ["https://h/p#f", "https://h/a/%2e%2e/b", "http://h/a%00", "https://h/a/../b"])
def test_other_schemes_refuse_fragments_dots_and_controls(url):
    with pytest.raises(urls.UrlError):
        urls.check_url(url)


def test_http_keeps_queries_and_encoded_slashes():
    assert urls.check_url("https://h:8443/p/a%2Fb?x=1") == "https://h:8443/p/a%2Fb?x=1"


# -- submissions: URLs and roots ------------------------------------------------------------


def _submission(source: str, destination: str, **params) -> dict:
    return {"files": [transfer(source, destination)], "params": params}


def _refused(body, roots=("/r",)) -> FtsHttpError:
    with pytest.raises(FtsHttpError) as err:
        parse_submission(body, roots=roots)
    assert err.value.status == 400
    return err.value


def test_encoded_dots_in_a_destination_are_refused():
    err = _refused(_submission("file:///r/src/a", "file:///r/dst/%2e%2e/x"))
    assert "destinations[0]" in err.message and "'..'" in err.message


def test_file_urls_outside_the_roots_are_refused_both_ways():
    assert "roots" in _refused(_submission("file:///etc/shadow", "file:///r/mine")).message
    assert "roots" in _refused(_submission("file:///r/a", "file:///etc/cron.d/x")).message
    assert "roots" in _refused(_submission("file:///r", "file:///r/x")).message  # the root itself is no file
    assert "roots" in _refused(_submission("file:///rr/a", "file:///r/x")).message  # a sibling with the same start
    spec = parse_submission(_submission("file:///r/a", "file:///r/sub/x"), roots=("/r",))
    assert spec.files[0].destination == "file:///r/sub/x"


def test_without_roots_file_urls_are_refused_naming_the_flag():
    err = _refused(_submission("file:///r/a", "https://h/x"), roots=())
    assert "--root" in err.message


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("filesize", 10**30), ("filesize", 2**63), ("filesize", 1.0), ("filesize", "1e3"), ("filesize", "１２"),
        ("filesize", -1), ("filesize", True),
        ("retry", 10**30), ("retry", -(10**30)), ("retry", 3.5),
        ("retry_delay", 10**30), ("retry_delay", -1), ("retry_delay", "x"),
        ("max_time_in_queue", 10**30), ("max_time_in_queue", -5), ("max_time_in_queue", "99999999999999999999d"),
        ("max_time_in_queue", 1.5),
        ("priority", 10**30), ("priority", 2.0), ("priority", "high"),
        ("timeout", 10**30), ("buffer_size", -1),
    ],
)
def test_integers_are_bounded_and_integral(where, value):
    body = _submission("file:///r/a", "file:///r/b")
    if where == "filesize":
        body["files"][0]["filesize"] = value
    else:
        body["params"][where] = value
    assert where in _refused(body).message


def test_integers_in_range_are_taken():
    body = _submission("file:///r/a", "file:///r/b", retry=-1, retry_delay="30", priority=9, max_time_in_queue="2h")
    body["files"][0]["filesize"] = 2**63 - 1
    spec = parse_submission(body, now=0, roots=("/r",))
    assert spec.retry == -1 and spec.retry_delay == 30 and spec.priority == 5 and spec.max_time_in_queue == 7200
    assert spec.files[0].filesize == 2**63 - 1


# -- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ['{"a": Infinity}', '{"a": -Infinity}', '{"a": NaN}', '{"a": 1e999}', "[" * 100_000 + "]" * 100_000,
     "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), '{"a": "\\ud800"}', "1" * 5000, "{", b"\xff\xfe\xfd"],
)
def test_json_the_service_refuses(text):
    with pytest.raises(FtsHttpError) as err:
        parse_json(text)
    assert err.value.status == 400 and "Badly formatted JSON request" in err.value.message


def test_json_within_limits():
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert parse_json(b"") is None and parse_json(b'{"a": 1.5}') == {"a": 1.5}


# -- the REST face, in process ------------------------------------------------------------------


@pytest.fixture
def client(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    service = FtsService(ServiceSettings(db=tmp_path / "fts.db", local_user_dn="/CN=tester", roots=(str(root),)))
    app = service.app()
    yield app.test_client(), root, service
    service.store.close()


def _post(c, path, body):
    return c.post(path, data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                  content_type="application/json")


def _fts_error(resp, status):
    assert resp.status_code == status, resp.get_data(as_text=True)
    body = resp.get_json()
    assert body["status"].startswith(str(status)) and isinstance(body["message"], str)
    return body["message"]


def test_rest_refuses_nul_and_escapes_at_submission(client):
    c, root, _ = client
    for dst in (f"{root.as_uri()}/a%00b", f"{root.as_uri()}/dst/%2e%2e/x", f"{root.as_uri()}/h#frag.bin",
                f"{root.as_uri()}/q?x=1.bin", "file:///etc/x"):
        _fts_error(_post(c, "/jobs", _submission(f"{root.as_uri()}/src", dst)), 400)


@pytest.mark.parametrize(
    "body",
    [
        {"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"], "filesize": 10**30}]},
        {"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"]}], "params": {"retry": 10**30}},
        {"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"]}], "params": {"retry_delay": 10**30}},
        {"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"]}], "params": {"max_time_in_queue": 10**30}},
        '{"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"], "filesize": Infinity}]}',
        "[" * 100_000 + "]" * 100_000,
        '{"files": [{"sources": ["https://h/a"], "destinations": ["https://h/b"], "activity": "\\udc80"}]}',
    ],
)
def test_rest_submission_overflows_are_400(client, body):
    _fts_error(_post(client[0], "/jobs", body), 400)


def test_rest_modify_bulk_and_file_routes_refuse_huge_and_infinite_numbers(client):
    c, _, _ = client
    job = _post(c, "/jobs", {"files": [transfer("https://h/a", "https://h/b")]}).get_json()["job_id"]
    for text in ('{"params": {"priority": Infinity}}', '{"params": {"priority": 1e999}}', '{"params": {"priority": NaN}}',
                 '{"params": {"priority": 100000000000000000000000000000}}', '{"params": {"priority": 2.5}}',
                 "[" * 100_000 + "]" * 100_000):
        _fts_error(_post(c, f"/jobs/{job}", text), 400)
    assert _post(c, f"/jobs/{job}", {"params": {"priority": 9}}).get_json()["priority"] == 5
    _fts_error(c.delete(f"/jobs/{job}/files/{10**30}"), 400)
    _fts_error(c.delete(f"/jobs/{job}/files/1,{'9' * 5000}"), 400)
    _fts_error(c.get(f"/jobs/{job}/files/{10**30}/retries"), 400)
    _fts_error(c.get(f"/jobs/{job}/files/{'9' * 5000}/retries"), 400)
    assert c.get(f"/jobs/{job}/files/{2**63 - 1}/retries").get_json() == []
    _fts_error(c.get(f"/jobs?time_window={'9' * 4000}"), 400)
    _fts_error(c.get("/jobs?limit=-1"), 400)
    assert c.get("/jobs?state_in=" + ",".join(f"S{i}" for i in range(300_000))).get_json() == []
    assert [j["job_id"] for j in c.get("/jobs?state_in=NOPE,SUBMITTED").get_json()] == [job]


def test_unexpected_errors_answer_without_the_python_text(client, caplog):
    c, _, service = client

    def broken(_ids):
        raise RuntimeError("secret detail /etc/hidden")

    service.store.jobs = broken
    resp = c.get("/jobs/abc")
    assert resp.status_code == 500
    assert resp.get_json() == {"status": "500 Internal Server Error", "message": "internal error; see the service log"}
    assert "secret detail" not in resp.get_data(as_text=True)
    assert "secret detail" in caplog.text  # the traceback is in the service's log


def test_bodies_larger_than_the_limit_are_413(client, monkeypatch):
    c, _, _ = client
    resp = _post(c, "/jobs", b" " * (32 * 1024 * 1024 + 1))
    _fts_error(resp, 413)


# -- the file plug-in: symlinks out of the roots ---------------------------------------------------


def test_plugin_refuses_a_source_linked_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret").write_text("s")
    (root / "link").symlink_to(outside / "secret")
    with pytest.raises(CopyError) as err:
        source_for((root / "link").as_uri(), roots=(str(root),))
    assert not err.value.recoverable and err.value.reason.startswith("SOURCE [13]") and "symbolic link" in err.value.reason
    with pytest.raises(CopyError) as err:
        source_for((outside / "secret").as_uri(), roots=(str(root),))
    assert not err.value.recoverable
    with pytest.raises(CopyError) as err:
        source_for((outside / "secret").as_uri())  # no roots: no file:// at all
    assert not err.value.recoverable


def test_plugin_refuses_a_destination_folder_linked_out_of_the_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (root / "dir").symlink_to(outside)
    with pytest.raises(CopyError) as err:
        destination_for((root / "dir" / "new" / "x").as_uri(), "1", roots=(str(root),))
    assert not err.value.recoverable and err.value.reason.startswith("DESTINATION [13]")
    # a partial file planted as a link is not written through
    (root / "ok").mkdir()
    dst = destination_for((root / "ok" / "x").as_uri(), "7", roots=(str(root),))
    (root / "ok" / ".x.7.part").symlink_to(outside / "victim")
    with pytest.raises(CopyError) as err:
        dst.write(iter([b"data"]), 0, lambda n: None)
    assert not err.value.recoverable and not (outside / "victim").exists()


def test_roots_through_a_linked_root_folder(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    (real / "a").write_text("x")
    assert source_for((tmp_path / "alias" / "a").as_uri(), roots=(str(tmp_path / "alias"),)).size() == 1


# -- the real service --------------------------------------------------------------------------


def test_service_fails_a_symlink_escape_without_retrying(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    (outside / "secret").write_text("do not copy")
    (root / "link").symlink_to(outside / "secret")
    (root / "dst").mkdir()
    (root / "dst" / "up").symlink_to(outside)
    with plain_fts(tmp_path / "fts", roots=[root]) as fts:
        resp = fts.request("POST", "/jobs", json=_submission(f"{root.as_uri()}/a", f"{root.as_uri()}/dst/%2e%2e/x"))
        assert resp.status_code == 400 and resp.json()["status"] == "400 Bad Request"
        resp = fts.request("POST", "/jobs", json=_submission(f"{root.as_uri()}/a", f"{root.as_uri()}/x%00"))
        assert resp.status_code == 400
        (root / "src").write_text("fine")
        job = fts.submit([transfer((root / "link").as_uri(), (root / "dst" / "copy").as_uri()),
                          transfer((root / "src").as_uri(), (root / "dst" / "up" / "planted").as_uri())], retry=3)
        done = fts.wait(job)
        files = fts.files(job)
        assert done["job_state"] == "FAILED", files
        assert all("outside the service's roots" in f["reason"] and f["retry"] == 0 for f in files), files
    assert not (root / "dst" / "copy").exists() and sorted(os.listdir(outside)) == ["secret"]


# -- where the roots come from ------------------------------------------------------------------


def _config(tmp_path: Path, text: str) -> AppContext:
    path = tmp_path / "aso.toml"
    path.write_text(text)
    return AppContext(config_path=str(path))


def _roots(app, given):
    return _folders(app, given, "--root", "roots", tape=False)


def _tape_roots(app, given):
    return _folders(app, given, "--tape-root", "tape_roots", tape=True)


def test_roots_precedence(tmp_path):
    sites = '[sites.A]\nprefix = "file:///data/a/"\nfts = "https://f"\n[sites.B]\nprefix = "https://h/x"\nfts = "https://f"\n'
    app = _config(tmp_path, sites)
    assert _roots(app, ()) == (("/data/a",), "the file:// prefixes of [sites]")
    assert _roots(app, ("/x", "/x/")) == (("/x",), "--root")
    app = _config(tmp_path, '[fts_server]\nroots = ["/srv/one", "rel"]\n' + sites)
    assert _roots(app, ()) == (("/srv/one", str(tmp_path / "rel")), "fts_server.roots")
    app = _config(tmp_path, '[sites.B]\nprefix = "https://h/x"\nfts = "https://f"\n')
    assert _roots(app, ()) == ((), "none")


def test_tape_roots_precedence(tmp_path):
    """Tape roots come from the same places, but only tape sites' prefixes count."""
    sites = ('[monitor]\njob_timeout = 86400\n[sites.T]\nprefix = "file:///data/tape/"\nfts = "https://f"\ntape = true\n'
             '[sites.D]\nprefix = "file:///data/disk/"\nfts = "https://f"\n')
    app = _config(tmp_path, sites)
    assert _tape_roots(app, ()) == (("/data/tape",), "the file:// prefixes of the tape sites in [sites]")
    assert _roots(app, ()) == (("/data/tape", "/data/disk"), "the file:// prefixes of [sites]")
    assert _tape_roots(app, ("/t",)) == (("/t",), "--tape-root")
    app = _config(tmp_path, '[fts_server]\ntape_roots = ["/srv/tape"]\n' + sites)
    assert _tape_roots(app, ()) == (("/srv/tape",), "fts_server.tape_roots")
    app = _config(tmp_path, '[sites.D]\nprefix = "file:///data/disk/"\nfts = "https://f"\n')
    assert _tape_roots(app, ()) == ((), "none")


def test_the_control_character_class_is_unicodes_cc_category():
    """URLs are checked for control characters with one character class; it must hold
    exactly the code points Unicode calls controls (category Cc), no more, no fewer."""
    import sys
    import unicodedata

    for code in range(sys.maxunicode + 1):
        c = chr(code)
        assert (urls._control("a" + c) == c) == (unicodedata.category(c) == "Cc"), hex(code)
