"""Fuzzing a real ``aso fts-server`` process (plain HTTP, one root folder in tmp).

Every route that takes input gets a deterministic, bounded stream of valid-looking and
hostile requests: URLs with encoded dots, NUL, '#', '?', %2F, links out of the root;
integers too large, negative, fractional, infinite or spelled as strings; arbitrary and
deeply nested JSON; bulk id lists mixing real, unknown and junk ids. Whatever comes in:
no 5xx, every error body is FTS3's JSON, and nothing is written outside the root.

The number of examples each test ran and the number of server errors seen are printed
(``-s`` is not needed: they are written with capture disabled).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ftsd.fts import PlainFts, transfer

#: examples run per test, and responses with a 5xx status (must stay 0)
EXAMPLES: Counter = Counter()
SERVER_ERRORS: Counter = Counter()

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class Env:
    def __init__(self, base: Path):
        self.base = base
        self.root = base / "root"
        self.outside = base / "outside"
        for folder in (self.root / "src", self.root / "dst", self.outside):
            folder.mkdir(parents=True, exist_ok=True)
        for name in ("a.bin", "b.bin"):
            (self.root / "src" / name).write_bytes(os.urandom(2000))
        (self.outside / "secret").write_text("outside the root")
        (self.root / "evil").symlink_to(self.outside)  # inside as written, outside once resolved
        (self.root / "src" / "leak").symlink_to(self.outside / "secret")
        self.fts = PlainFts(base / "fts", "--workers", "2", roots=[self.root])
        self.job_ids: list[str] = []
        self.dlg_id = ""

    def snapshot_outside(self) -> dict[str, tuple[int, int]]:
        """Every path under the base folder except the root and the service's own folder."""
        out = {}
        for dirpath, dirnames, filenames in os.walk(self.base):
            here = Path(dirpath)
            if here == self.base:
                dirnames[:] = [d for d in dirnames if d not in ("root", "fts")]
            for name in dirnames + filenames:
                st_ = os.lstat(here / name)
                out[str(here / name)] = (st_.st_size, int(st_.st_mtime_ns))
        return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = Env(tmp_path_factory.mktemp("fuzz"))
    e.before = e.snapshot_outside()
    e.fts.start()
    try:
        e.dlg_id = e.fts.request("GET", "/whoami").json()["delegation_id"]
        src = e.root / "src"
        for i in range(3):
            e.job_ids.append(e.fts.submit([transfer((src / "a.bin").as_uri(), (e.root / "dst" / f"seed{i}").as_uri())]))
        e.job_ids.append(e.fts.submit([transfer("http://127.0.0.1:1/x", (e.root / "dst" / "never").as_uri()),
                                       transfer((src / "b.bin").as_uri(), (e.root / "dst" / "seed-b").as_uri())]))
        yield e
    finally:
        e.fts.stop()


@pytest.fixture(autouse=True)
def _report(request, capsys):
    yield
    name = request.node.name
    if name in EXAMPLES or name in SERVER_ERRORS:
        with capsys.disabled():
            print(f"\n[fuzz] {name}: {EXAMPLES[name]} examples, {SERVER_ERRORS[name]} server errors")


def check(name: str, resp) -> None:
    """No 5xx; errors in FTS3's shape; JSON answers parse."""
    EXAMPLES[name] += 1
    if resp.status_code >= 500:
        SERVER_ERRORS[name] += 1
    assert resp.status_code < 500, (resp.status_code, resp.text[:500])
    ctype = resp.headers.get("Content-Type", "")
    if resp.status_code >= 400:
        body = resp.json()
        assert isinstance(body, dict), body
        if "job_id" in body:  # one job asked for by id: FTS3 answers with that job's error element
            assert body["http_status"].startswith(str(resp.status_code)) and isinstance(body["http_message"], str), body
        else:
            assert body["status"].startswith(str(resp.status_code)) and isinstance(body["message"], str), body
    elif "json" in ctype:
        resp.json()
    else:  # the few answers FTS3 gives as something else: a PEM request, an empty 201/204
        assert ctype.startswith("text/plain") or not resp.content, (resp.status_code, ctype, resp.text[:200])


# -- strategies ---------------------------------------------------------------------------------

HOSTILE_PARTS = ["a", "b.bin", "x", "%2e%2e", "%2E%2e", "..", ".", "%2e", "%00", "a%00b", "\x00", "%0a", "\n", "%7f",
                 "%2F", "%2f..", "..%2f..", "h#frag.bin", "#", "q?x=1.bin", "?", "%ff", "%25", "%252e%252e", "a%20b",
                 "", "evil", "leak", "src", "dst", "~", "\u202e", "%c0%ae%c0%ae", "\ud800"]
INTS = st.one_of(
    st.integers(min_value=-10, max_value=10),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), 10**30, -(10**30), 2**31, 10**4000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1", " 7 ", "-1", "1e3", "١٢", "１２", "Infinity", "NaN", "0x10", "", "99999999999999999999d", "2h"]),
    st.booleans(), st.none(),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


def url_strategy(e: Env):
    bases = st.sampled_from([
        e.root.as_uri() + "/dst", e.root.as_uri() + "/src", e.root.as_uri(), e.root.as_uri() + "/evil",
        e.outside.as_uri(), "file:///etc", "file://", "file://localhost" + str(e.root / "dst"), "file://otherhost/tmp",
        "http://127.0.0.1:1", "https://storage.example", "root://h.example//store", "gsiftp://h/x", "", "file:",
    ])
    tail = st.lists(st.one_of(st.sampled_from(HOSTILE_PARTS), st.text(max_size=6)), min_size=0, max_size=4)
    return st.one_of(
        st.builds(lambda b, t: b + "/" + "/".join(t), bases, tail),
        st.sampled_from([(e.root / "src" / "a.bin").as_uri(), (e.root / "src" / "leak").as_uri()]),
        JSON,
    )


def submission_strategy(e: Env):
    url = url_strategy(e)
    file_entry = st.fixed_dictionaries(
        {"sources": st.one_of(st.lists(url, min_size=1, max_size=2), JSON),
         "destinations": st.one_of(st.lists(url, min_size=1, max_size=2), JSON)},
        optional={"filesize": INTS, "checksum": st.one_of(st.sampled_from(["ADLER32", "adler32:1a2b", "MD5:1", "ADLER32:zz"]), JSON),
                  "metadata": JSON, "activity": JSON},
    )
    params = st.fixed_dictionaries({}, optional={
        "priority": INTS, "retry": INTS, "retry_delay": INTS, "max_time_in_queue": INTS, "timeout": INTS,
        "nostreams": INTS, "buffer_size": INTS, "strict_copy": JSON, "overwrite": st.booleans(),
        "verify_checksum": st.one_of(st.booleans(), st.sampled_from(["both", "x", "n"])), "reuse": st.booleans(),
        "id_generator": st.sampled_from(["standard", "deterministic", "other"]), "sid": JSON, "job_metadata": JSON,
    })
    return st.fixed_dictionaries({"files": st.lists(file_entry, min_size=0, max_size=3), "params": params},
                                 optional={"delete": JSON})


def plausible_submission_strategy(e: Env):
    """Mostly acceptable jobs (real sources, destinations under the root) with now and then
    one hostile part: these reach the copy workers and the file plug-in."""
    sources = st.sampled_from([(e.root / "src" / n).as_uri() for n in ("a.bin", "b.bin", "leak", "missing")]
                              + ["http://127.0.0.1:1/x"])
    name = st.text(alphabet="abcxyz019_-.", min_size=1, max_size=8).filter(lambda t: t not in (".", ".."))
    part = st.one_of(name, name, name, st.sampled_from(HOSTILE_PARTS))
    folder = st.sampled_from(["dst", "dst", "dst/sub", "dst/sub/deeper", "evil", "dst/../..", "src"])
    destinations = st.builds(lambda f, parts: f"{e.root.as_uri()}/{f}/" + "/".join(parts), folder,
                             st.lists(part, min_size=1, max_size=3))
    file_entry = st.fixed_dictionaries({"sources": st.lists(sources, min_size=1, max_size=1),
                                        "destinations": st.lists(destinations, min_size=1, max_size=1)},
                                       optional={"filesize": st.integers(0, 5000)})
    small = st.integers(min_value=-3, max_value=10)
    params = st.fixed_dictionaries({}, optional={"priority": small, "retry": small, "retry_delay": small,
                                                 "overwrite": st.booleans(), "verify_checksum": st.booleans()})
    return st.fixed_dictionaries({"files": st.lists(file_entry, min_size=1, max_size=2), "params": params})


RAW_BODIES = st.sampled_from([
    b"", b"{", b"null", b"[]", b'"files"', b"\xff\xfe", b'{"files": [{"sources": ["file:///x"], "destinations": NaN}]}',
    b'{"params": {"priority": Infinity}}', b'{"params": {"priority": 1e999}}', b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b'{"files": "\\ud800"}', b"1" * 5000,
])


def body_bytes(value) -> bytes:
    if isinstance(value, bytes):
        return value
    return json.dumps(value).encode("utf-8", "surrogatepass")  # NaN/Infinity written as such, on purpose


def id_list(e: Env):
    one = st.one_of(st.sampled_from(e.job_ids), st.uuids().map(str), st.text(max_size=12),
                    st.sampled_from(["", " ", ",", "..", "%2e%2e", "\x00", "a" * 300, "'; DROP TABLE t_job; --"]))
    return st.lists(one, min_size=0, max_size=6).map(lambda ids: quote(",".join(ids), safe=","))


FILE_IDS = st.lists(st.one_of(st.integers(min_value=-5, max_value=2**64), st.sampled_from(["1", "x", "", " 2", "٣", "9" * 5000]),
                              st.text(max_size=5)),
                    min_size=0, max_size=5).map(lambda ids: quote(",".join(str(i) for i in ids), safe=","))


# -- the tests ------------------------------------------------------------------------------------


def test_submissions(env):
    name = "test_submissions"

    @settings(FUZZ, max_examples=300)
    @given(st.one_of(plausible_submission_strategy(env), plausible_submission_strategy(env), submission_strategy(env),
                     JSON, RAW_BODIES))
    def run(body):
        resp = env.fts.request("POST", "/jobs", data=body_bytes(body), headers={"Content-Type": "application/json"})
        check(name, resp)
        if resp.status_code == 200:
            env.job_ids.append(resp.json()["job_id"])

    run()


def test_bulk_get(env):
    name = "test_bulk_get"

    @settings(FUZZ, max_examples=100)
    @given(id_list(env), st.sampled_from(["", "?files=file_id,file_state", "?files=", "?files=%00"]))
    def run(ids, query):
        check(name, env.fts.request("GET", f"/jobs/{ids}{query}"))

    run()


def test_modify_priority(env):
    name = "test_modify_priority"

    @settings(FUZZ, max_examples=100)
    @given(id_list(env), st.one_of(st.fixed_dictionaries({"params": st.fixed_dictionaries({"priority": INTS})}), JSON, RAW_BODIES))
    def run(ids, body):
        check(name, env.fts.request("POST", f"/jobs/{ids}", data=body_bytes(body), headers={"Content-Type": "application/json"}))

    run()


def test_cancel_files_and_retries(env):
    name = "test_cancel_files_and_retries"

    @settings(FUZZ, max_examples=100)
    @given(st.sampled_from(env.job_ids[:4] + ["unknown", "%00"]), FILE_IDS, st.booleans())
    def run(job_id, file_ids, retries):
        if retries:
            first = file_ids.split(",")[0] or "1"
            check(name, env.fts.request("GET", f"/jobs/{job_id}/files/{first}/retries"))
        else:
            check(name, env.fts.request("DELETE", f"/jobs/{job_id}/files/{file_ids}"))

    run()


def test_cancel_jobs(env):
    name = "test_cancel_jobs"

    @settings(FUZZ, max_examples=60)
    @given(id_list(env))
    def run(ids):
        check(name, env.fts.request("DELETE", f"/jobs/{ids}"))

    run()


def test_delegation_routes(env):
    name = "test_delegation_routes"
    ids = st.one_of(st.just(env.dlg_id), st.text(max_size=20).map(lambda t: quote(t, safe="")),
                    st.sampled_from(["0", "%2e%2e", "a" * 500, env.dlg_id.upper()]))
    bodies = st.one_of(st.binary(max_size=200), RAW_BODIES, st.sampled_from([
        b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        b"-----BEGIN CERTIFICATE-----\n" + b"A" * 5000 + b"\n-----END CERTIFICATE-----\n",
    ]))

    @settings(FUZZ, max_examples=120)
    @given(st.sampled_from(["request", "put", "post", "delete", "view", "whoami", "certificate"]), ids, bodies)
    def run(route, dlg_id, body):
        method, path = {
            "request": ("GET", f"/delegation/{dlg_id}/request"),
            "put": ("PUT", f"/delegation/{dlg_id}/credential"),
            "post": ("POST", f"/delegation/{dlg_id}/credential"),
            "delete": ("DELETE", f"/delegation/{dlg_id}"),
            "view": ("GET", f"/delegation/{dlg_id}"),
            "whoami": ("GET", "/whoami"),
            "certificate": ("GET", "/whoami/certificate"),
        }[route]
        check(name, env.fts.request(method, path, data=body if method in ("PUT", "POST") else None))

    run()


def test_listing(env):
    name = "test_listing"
    value = st.one_of(st.text(max_size=12), st.sampled_from(["SUBMITTED,ACTIVE", "FINISHED", ",,,", "1", "-1", "9" * 30,
                                                             "1:30", "1:", ":", "١", "%00", "job_id,job_state"]))
    query = st.dictionaries(st.sampled_from(["state_in", "limit", "time_window", "fields", "vo_name", "user_dn", "dlg_id",
                                             "source_se", "dest_se"]), value, max_size=4)

    @settings(FUZZ, max_examples=60)
    @given(query)
    def run(params):
        check(name, env.fts.request("GET", "/jobs", params=params))

    run()


def test_zz_nothing_written_outside_the_root(env, capsys):
    """Last: once the copies the fuzzing started have settled, nothing changed outside the root."""
    deadline, quiet = time.monotonic() + 20, 0
    while time.monotonic() < deadline and quiet < 3:
        active = env.fts.request("GET", "/jobs?state_in=ACTIVE&limit=500").json()
        quiet = 0 if active else quiet + 1
        time.sleep(0.2)
    assert env.snapshot_outside() == env.before
    assert (env.outside / "secret").read_text() == "outside the root"
    log = env.fts.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    written = sorted(str(p.relative_to(env.root)) for p in (env.root / "dst").rglob("*"))
    with capsys.disabled():
        print(f"\n[fuzz] total: {sum(EXAMPLES.values())} examples, {sum(SERVER_ERRORS.values())} server errors; "
              f"{len(env.job_ids)} jobs accepted; {len(written)} paths under root/dst")
    assert sum(SERVER_ERRORS.values()) == 0
