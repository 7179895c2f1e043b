"""The status page through Flask's test client, on the real store (SQLite): login and the
session cookie, who sees what, bad input, escaping, and that the API keeps its tokens."""

from __future__ import annotations

import re

import pytest

from aso.state import open_backend
from aso.state.auth import BearerTokenAuthenticator
from aso.state.server import create_app
from aso.state.store import Store
from aso.web import queries
from tests.state.servers import TOKENS
from tests.web.conftest import csrf_of, login
from tests.web.data import FTS, MULTIHOP, PLAN, XSS, populate, totals

# (werkzeug's test client takes the scheme from base_url: environ_base's wsgi.url_scheme
# would be overwritten)
HTTPS = {"base_url": "https://localhost"}


def counts_on(html: str, table: str) -> dict[str, int]:
    body = re.search(rf'<table id="{table}".*?</table>', html, re.S).group(0)
    return {s: int(n) for s, n in re.findall(r'data-state="([A-Z_]+)">(\d+)<', body)}


def nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def test_every_page_but_the_login_form_needs_a_session(app):
    client = app.test_client()
    for path in ("/", "/task/alice_task_1", "/task/no_such_task?state=BOGUS"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["Location"] == "/login", path
    form = client.get("/login")
    assert form.status_code == 200 and 'type="password"' in form.text
    assert 'http-equiv="refresh"' not in form.text  # a half-typed token is not wiped


def test_login_sets_a_strict_http_only_cookie_and_puts_no_token_in_a_url(app):
    client = app.test_client()
    answer = login(client, "operator-token")
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("aso_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP (loopback): a Secure cookie would never come back
    assert "operator-token" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "operator-token" not in page.text
    for url in re.findall(r'(?:href|action)="([^"]*)"', page.text):
        assert "token" not in url, url


def test_a_login_ends_after_session_hours_however_often_the_page_reloads(app):
    client = app.test_client()
    login(client, "operator-token")
    answer = client.get("/")
    assert answer.status_code == 200 and "Set-Cookie" not in answer.headers  # no sliding renewal
    with client.session_transaction() as session:
        session["at"] -= int(app.permanent_session_lifetime.total_seconds()) + 1
    answer = client.get("/")
    assert answer.status_code == 303 and answer.headers["Location"] == "/login"


def test_the_cookie_is_secure_over_https(app):
    client = app.test_client()
    answer = login(client, "operator-token", **HTTPS)
    assert answer.status_code == 303
    assert "; Secure" in answer.headers["Set-Cookie"]
    assert client.get("/", **HTTPS).status_code == 200


def test_a_bad_token_gets_one_clear_message_and_no_session(app):
    client = app.test_client()
    bodies = []
    for token in ("wrong-token-123", "alice-token-but-longer", "x" * 5000, ""):
        form = client.get("/login")
        answer = client.post("/login", data={"token": token, "csrf": csrf_of(form.text)})
        assert answer.status_code in (400, 401)
        assert "That token is not valid." in answer.text or answer.status_code == 400
        bodies.append(re.sub(r'name="csrf" value="[^"]+"', "", answer.text))
        assert client.get("/").status_code == 303
    # the same answer for every wrong token: nothing says which tokens or identities exist
    assert bodies[0] == bodies[1] == bodies[2]


def test_a_token_in_the_url_logs_nobody_in(app):
    client = app.test_client()
    client.get("/login?token=operator-token")
    client.post("/login?token=operator-token", data={"csrf": "nope"})
    assert client.get("/").status_code == 303


def test_login_and_logout_need_the_forms_csrf_token_and_the_same_origin(app):
    client = app.test_client()
    client.get("/login")
    assert client.post("/login", data={"token": "operator-token"}).status_code == 400
    form = client.get("/login")
    other = client.post("/login", data={"token": "operator-token", "csrf": csrf_of(form.text)},
                        headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and client.get("/").status_code == 303
    assert login(client, "operator-token").status_code == 303
    page = client.get("/")
    assert client.post("/logout", data={"csrf": "forged"}).status_code == 400
    assert client.get("/").status_code == 200  # still logged in
    answer = client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/login"
    assert client.get("/").status_code == 303


def test_the_operator_sees_every_state_and_the_components(app):
    client = app.test_client()
    login(client, "operator-token")
    page = client.get("/")
    assert page.status_code == 200
    assert nonzero(counts_on(page.text, "transfer-states")) == totals()
    publication = counts_on(page.text, "publication-states")
    assert sum(publication.values()) == sum(totals().values()) and publication["NEW"] == sum(totals().values())
    assert 'http-equiv="refresh" content="30"' in page.text
    for task in ("alice_task_1", "bob_task_1"):
        assert f'href="/task/{task}"' in page.text
    links = re.search(r'<table id="links".*?</table>', page.text, re.S).group(0)
    assert "<td>T2_XX_Source</td><td>T2_YY_Dest</td><td class=\"n\">3</td><td class=\"n\">1</td><td class=\"n\">3</td>" in links
    health = re.search(r'<table id="health".*?</table>', page.text, re.S).group(0)
    assert "running (pid 4242 holds the lock)" in health
    assert "reporter: state server unreachable" in health and "monitor: 12 polled" in health
    assert 'class="bad"' in health  # the reporter's exit code 3
    failures = re.search(r'<table id="failures".*?</table>', page.text, re.S).group(0)
    assert "TRANSFER Operation timed out" in failures


def test_a_user_sees_only_their_own_rows(app):
    client = app.test_client()
    login(client, "bob-token")
    page = client.get("/")
    assert nonzero(counts_on(page.text, "transfer-states")) == PLAN["bob"][1]
    assert "alice" not in page.text and 'id="health"' not in page.text
    own = client.get("/task/bob_task_1")
    assert own.status_code == 200 and "alice" not in own.text
    # Another user's task is exactly as absent as a task that does not exist.
    theirs, nothing = client.get("/task/alice_task_1"), client.get("/task/no_such_task")
    assert theirs.status_code == nothing.status_code == 404
    assert theirs.text == nothing.text and "alice" not in theirs.text
    assert client.get("/task/alice_task_1?state=DONE&page=1").status_code == 404


def test_the_overview_queries_confine_a_user(store_url, filled):
    store = Store(store_url)
    try:
        mine = queries.overview(store, "alice", with_health=False)
        assert nonzero(mine.transfer_counts) == PLAN["alice"][1]
        assert {t["user"] for t in mine.tasks} == {"alice"} and mine.health is None
        assert queries.task_page(store, "alice", "bob_task_1") is None
        assert queries.task_page(store, None, "bob_task_1").total == sum(PLAN["bob"][1].values())
    finally:
        store.close()


def test_a_task_page_shows_files_paths_fts_jobs_and_reasons(app):
    client = app.test_client()
    login(client, "operator-token")
    page = client.get("/task/alice_task_1")
    assert page.status_code == 200 and 'http-equiv="refresh" content="30"' in page.text
    assert f'href="{FTS}/jobs/job-0000"' in page.text and "FTS3 REST" in page.text
    assert MULTIHOP.replace(">", " → ") in page.text
    assert page.text.count('<tr class="s-') == sum(PLAN["alice"][1].values())
    assert "/store/temp/user/alice/alice_task_1/out_0.root" in page.text
    assert "1/3" in page.text  # the RETRY row's retry count of its maximum
    failed = client.get("/task/alice_task_1?state=failed")
    assert failed.text.count('<tr class="s-') == 1 and "&lt;script&gt;" in failed.text
    assert "No files on this page." in client.get("/task/alice_task_1?page=2").text


@pytest.mark.parametrize(("query", "field"), [
    ("state=BOGUS", "state"), ("state=%3Cscript%3E", "state"), ("state=" + "A" * 500, "state"),
    ("state=99", "state"), ("page=0", "page"), ("page=abc", "page"), ("page=-1", "page"),
    ("page=99999999999999999999", "page"), ("page=", "page"), ("page=%C2%B2", "page"),
])
def test_bad_query_parameters_are_a_400_page_naming_them(app, query, field):
    client = app.test_client()
    login(client, "operator-token")
    answer = client.get(f"/task/alice_task_1?{query}")
    assert answer.status_code == 400 and answer.mimetype == "text/html"
    assert f'<code class="field">{field}</code>' in answer.text
    assert "<script>" not in answer.text and "Traceback" not in answer.text


def test_users_text_is_escaped_and_headers_forbid_scripts_and_frames(app):
    client = app.test_client()
    login(client, "operator-token")
    for path in ("/", "/task/alice_task_1", "/task/bob_task_1"):
        answer = client.get(path)
        assert "<script" not in answer.text.lower()
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in answer.text, path
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "same-origin"
        assert answer.headers["Cache-Control"] == "no-store"
    assert XSS not in client.get("/").text


def test_an_fts_endpoint_that_is_not_http_is_no_link():
    assert queries.fts_job_link("javascript:alert(1)//", "j") is None
    assert queries.fts_job_link("https://fts:8446/", "j1") == "https://fts:8446/jobs/j1"


def test_the_api_keeps_its_bearer_tokens_and_healthz_stays_open(app):
    client = app.test_client()
    login(client, "operator-token")
    # A page session is no API credential.
    api = client.get("/crabserver/test/filetransfers", query_string={"subresource": "activeUsers", "asoworker": "w"})
    assert api.status_code == 401 and "bearer token" in api.json["error"]
    assert client.get("/no/such/path").status_code == 401
    assert client.get("/healthz").json == {"status": "ok"}
    with_token = app.test_client().get("/crabserver/test/filetransfers",
                                       query_string={"subresource": "activeUsers", "asoworker": "worker-a"},
                                       headers={"Authorization": "Bearer service-token"})
    assert with_token.status_code == 200


def test_a_forged_or_foreign_cookie_is_no_session(app, store_url):
    client = app.test_client()
    login(client, "operator-token")
    cookie = client.get_cookie("aso_session").value
    payload, _, signature = cookie.partition(".")
    forged = app.test_client()
    forged.set_cookie("aso_session", payload + ".AAAA" + signature[4:])
    assert forged.get("/").status_code == 303
    # another process without the configured secret draws its own: the cookie is worth nothing there
    other = create_app(Store(store_url), BearerTokenAuthenticator(TOKENS)).test_client()
    other.set_cookie("aso_session", cookie)
    assert other.get("/").status_code == 303


def test_a_configured_secret_is_shared_between_processes(store_url, filled):
    secret = "s" * 40
    first = create_app(Store(store_url), BearerTokenAuthenticator(TOKENS), web={"secret": secret}).test_client()
    login(first, "alice-token")
    second = create_app(Store(store_url), BearerTokenAuthenticator(TOKENS), web={"secret": secret}).test_client()
    second.set_cookie("aso_session", first.get_cookie("aso_session").value)
    assert second.get("/").status_code == 200


@pytest.mark.postgres
def test_the_overview_queries_on_postgresql(postgres_url):
    from tests.state.conftest import fresh_postgres

    fresh_postgres(postgres_url)
    backend = open_backend(postgres_url, worker="worker-a")
    populate(backend)
    backend.close()
    store = Store(postgres_url)
    try:
        everything = queries.overview(store, None, with_health=True)
        assert nonzero(everything.transfer_counts) == totals()
        assert {p.component for p in everything.health} == {"transfer", "monitor", "reporter"}
        assert sum(b.files for b in everything.day) == totals()["DONE"]
        assert sum(b.files for b in everything.hour) == totals()["DONE"]
        assert {f["state"] for f in everything.failures} == {"FAILED", "RETRY"}
        assert everything.oldest_waiting and {r["state"] for r in everything.oldest_in_flight} <= {"ACQUIRED", "SUBMITTED"}
        bob = queries.overview(store, "bob", with_health=False)
        assert nonzero(bob.transfer_counts) == PLAN["bob"][1] and {t["user"] for t in bob.tasks} == {"bob"}
        page = queries.task_page(store, "bob", "bob_task_1", state=None, page=1)
        assert page.total == sum(PLAN["bob"][1].values())
        assert queries.task_page(store, "bob", "alice_task_1") is None
    finally:
        store.close()
