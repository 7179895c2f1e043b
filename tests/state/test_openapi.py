"""The OpenAPI document of the state server: checked against ROUTES, then used to fuzz a
real ``aso server`` with schemathesis, once per operation and role.

The fuzzing is bounded and derandomized (the same cases every run); it asserts no 5xx and
answers that conform to the document (status code documented, content type, body schema).
Failures are collected rather than shrunk, so one run lists them all; the counts are printed
when the module ends (``-s`` not needed).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from typing import Any

import pytest
import requests

from aso import validate
from aso.state.api import ROUTES
from aso.state.openapi import build_document
from aso.state.operations import FORMATS, OPERATIONS, PARAMETERS, wire_name
from tests.state.servers import start_state_server

INSTANCE = "test"
DOCUMENT = build_document(INSTANCE)
#: tokens of tests/state/servers.py; "invalid" sends a token the server does not know
TOKENS = {"service": "service-token", "operator": "operator-token", "user": "alice-token", "invalid": "no-such-token"}
#: examples per operation, role and generation mode (positive and negative)
MAX_EXAMPLES = {"service": 20, "operator": 12, "user": 12, "invalid": 3}
#: ...and for a role that may call none of the operation's subresources (all 403 or 400)
MAX_EXAMPLES_FORBIDDEN = 4
LABELS = [f"{method.upper()} {path}" for path, ops in DOCUMENT["paths"].items() for method in ops]

#: values the fuzzer prefers, so that generated calls meet rows that exist (the server is
#: seeded with transfers of these users, tasks and LFNs before fuzzing)
USERS = ["alice", "bob"]
TASKS = ["240101_000000:alice_crab_a", "240101_000000:bob_crab_b"]
LFN_PARTS = ["store", "user", "temp", "alice", "bob", "f1.root", "f2.root", "log", "0000", "a+b_c-d.e"]
SEEDED_LFNS = [f"/store/temp/user/{user}/{name}" for user in USERS for name in ("f1.root", "f2.root", "log")]
SEEDED_IDS = [validate.lfn_id(lfn) for lfn in SEEDED_LFNS]


def _operation(resource: str, method: str) -> dict[str, Any]:
    return DOCUMENT["paths"][f"/crabserver/{{instance}}/{resource}"][method.lower()]


def _subresource_enums(op: dict[str, Any]) -> list[list[str]]:
    """Every place the operation declares `subresource`, as its enum."""
    enums = [p["schema"]["enum"] for p in op.get("parameters", []) if p.get("name") == "subresource"]
    for media in op.get("requestBody", {}).get("content", {}).values():
        schema = media["schema"]
        for alternative in schema.get("anyOf", [schema]):
            if "subresource" in alternative.get("properties", {}):
                enums.append(alternative["properties"]["subresource"]["enum"])
    return enums


# -- the document --------------------------------------------------------------------------
def test_document_is_valid_openapi():
    from openapi_spec_validator import validate

    validate(DOCUMENT)
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(DOCUMENT)
    operations = [result.ok() for result in schema.get_all_operations()]  # raises on a broken one
    assert sorted(op.label for op in operations) == sorted(LABELS)
    json.dumps(DOCUMENT)  # served as JSON


def test_every_route_is_documented_with_its_roles():
    for (resource, method, sub), (handler, roles) in ROUTES.items():
        op = _operation(resource, method)
        enums = _subresource_enums(op)
        assert enums, f"{method} {resource}: no subresource parameter"
        for enum in enums:
            assert sub in enum, f"{method} {resource}: {sub!r} missing from the subresource enum"
        described = op["x-aso-subresources"][sub]
        assert described["handler"] == handler
        assert described["roles"] == sorted(roles)
        assert f"`{sub or '(none)'}` [{', '.join(sorted(roles))}]" in op["description"]
        assert set(roles) <= set(op["x-aso-roles"])
        # a subresource that all routes of the method share... or a required parameter
        subresource_required = [p["required"] for p in op.get("parameters", []) if p.get("name") == "subresource"]
        if sub == "":
            assert subresource_required in ([False], []), f"{method} {resource}: an empty subresource must be optional"


def test_every_documented_subresource_is_routed():
    assert set(OPERATIONS) == set(ROUTES)
    for path, ops in DOCUMENT["paths"].items():
        if not path.startswith("/crabserver/{instance}/") or path.endswith("openapi.json"):
            continue
        resource = path.rsplit("/", 1)[1]
        for method, op in ops.items():
            routed = sorted(s for (r, m, s) in ROUTES if r == resource and m == method.upper())
            assert routed, f"{method} {path} is documented but not routed"
            for enum in _subresource_enums(op):
                assert sorted(enum) == routed, f"{method} {path}: {enum} != {routed}"
            assert sorted(op["x-aso-subresources"]) == routed
            # required everywhere unless the method has no subresource
            if "" not in routed:
                if method == "get":
                    assert [p["required"] for p in op["parameters"] if p.get("name") == "subresource"] == [True]
                else:
                    for media in op["requestBody"]["content"].values():
                        assert "subresource" in media["schema"]["required"]


def test_every_subresource_parameter_is_in_the_operation():
    for (resource, method, sub), spec in OPERATIONS.items():
        op = _operation(resource, method)
        if method == "GET":
            names = {p["name"] for p in op["parameters"] if p.get("in") == "query"}
        else:
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            names = set()
            for alternative in schema.get("anyOf", [schema]):
                names |= set(alternative.get("properties", {}))
        for name in spec.params:
            assert name in PARAMETERS
            assert wire_name(name) in names, f"{method} {resource} {sub}: {wire_name(name)} not documented"
        assert set(op["x-aso-subresources"][sub]["required"]) <= names


def test_array_query_parameters_are_repeated_keys():
    for path, ops in DOCUMENT["paths"].items():
        for op in ops.values():
            for p in op.get("parameters", []):
                if p.get("schema", {}).get("type") == "array":
                    assert (p["style"], p["explode"]) == ("form", True), f"{path} {p['name']}"


# -- a real server -------------------------------------------------------------------------
def _seed(url: str) -> None:
    """A few transfers per user (alice's first published), so fuzzed ids and names hit rows."""
    for user, task in zip(USERS, TASKS, strict=True):
        transfers = [
            {"username": user, "taskname": task, "source": "T2_XX_Source", "destination": "T2_YY_Dest",
             "source_lfn": lfn, "destination_lfn": lfn.replace("/temp", ""), "filesize": 1000 + i,
             "checksum": "0a1b2c3d", "publish": int(i == 0), "job_id": str(i)}
            for i, lfn in enumerate(SEEDED_LFNS) if f"/{user}/" in lfn
        ]
        answer = requests.put(f"{url}/crabserver/{INSTANCE}/fileusertransfers", json=transfers,
                              headers={"Authorization": "Bearer service-token"}, timeout=30)
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    service, url = start_state_server(tmp_path_factory.mktemp("openapi-server"))
    try:
        _seed(url)
        yield service, url
    finally:
        service.stop()


def test_the_server_serves_the_document(server):
    _service, url = server
    for role, token in TOKENS.items():
        answer = requests.get(f"{url}/crabserver/{INSTANCE}/openapi.json", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        if role == "invalid":
            assert answer.status_code == 401
            assert "error" in answer.json()
        else:
            assert answer.status_code == 200, answer.text
            assert answer.headers["Content-Type"].startswith("application/json")
            assert answer.json() == DOCUMENT
    assert requests.get(f"{url}/crabserver/{INSTANCE}/openapi.json", timeout=30).status_code == 401
    wrong = requests.get(f"{url}/crabserver/other/openapi.json", headers={"Authorization": "Bearer service-token"}, timeout=30)
    assert wrong.status_code == 404


# -- fuzzing -------------------------------------------------------------------------------
class FuzzStats:
    def __init__(self):
        self.examples: Counter = Counter()
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.server_errors: Counter = Counter()
        self.findings: dict[tuple, dict[str, Any]] = {}

        self._log_offset = 0

    def last_exception(self, log) -> str:
        """The last exception line the server logged since the previous call."""
        with open(log, errors="replace") as f:
            f.seek(self._log_offset)
            text = f.read()
            self._log_offset = f.tell()
        found = re.findall(r"^(\w+(?:\.\w+)*(?:Error|Exception)\b.*)$", text, re.M)
        return found[-1][:300] if found else "(no exception logged)"

    def summary(self, log_text: str) -> str:
        lines = ["", "== schemathesis fuzzing of aso server =="]
        for key in sorted(self.examples):
            statuses = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses[key].items()))
            lines.append(f"{key}: {self.examples[key]} examples ({statuses})")
        lines.append(
            f"total: {sum(self.examples.values())} examples, {sum(self.server_errors.values())} server errors (5xx), "
            f"{len(self.findings)} distinct findings"
        )
        for (label, role, _kind, status, _body), f in sorted(self.findings.items()):
            lines.append(f"- {label} as {role}: {status} {f['checks']} x{f['count']}: {f['body'][:400]}")
            lines.append(f"    {f['curl']}")
        exceptions = Counter(m.group(1) for m in re.finditer(r"^(\w+(?:\.\w+)*(?:Error|Exception)\b.*)$", log_text, re.M))
        if exceptions:
            lines.append("server log, exceptions raised:")
            lines += [f"  {n} x {text[:200]}" for text, n in exceptions.most_common()]
        return "\n".join(lines)


@pytest.fixture(scope="module")
def fuzz_stats(server, request):
    stats = FuzzStats()
    yield stats
    service, _url = server
    log_text = service.log.read_text(errors="replace") if service.log.exists() else ""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(stats.summary(log_text))


def _format_strategies():
    """Generators for the document's aso-* string formats: mostly known values, some random
    ones (each drawn in a few choices; character-by-character patterns make fuzzing slow)."""
    from hypothesis import strategies as st

    def known_or(values, other):
        return st.one_of(st.sampled_from(values), other)

    short = st.text("abcXYZ019_.-", min_size=1, max_size=8)
    strategies = {
        "aso-username": known_or([*USERS, "operator", "aso-service"], short.filter(lambda v: v not in (".", ".."))),
        "aso-worker": known_or(["worker-a", "worker-b", "%"], st.text("abc019-._%", min_size=1, max_size=8)),
        "aso-taskname": known_or(TASKS, st.text("abc019_.:-", min_size=1, max_size=12)),
        "aso-site": st.sampled_from(["T2_XX_Source", "T2_YY_Dest", "T1_ZZ", "X"]),
        "aso-transfer-id": known_or(SEEDED_IDS, st.integers(0, 2**224 - 1).map("{:056x}".format)),
        "aso-lfn": known_or(
            SEEDED_LFNS, st.lists(st.sampled_from(LFN_PARTS), min_size=1, max_size=6).map(lambda p: "/" + "/".join(p))
        ),
    }
    assert set(strategies) == set(FORMATS)
    return strategies


@pytest.fixture(scope="module")
def fuzz_schema():
    schemathesis = pytest.importorskip("schemathesis")
    for name, strategy in _format_strategies().items():
        schemathesis.openapi.format(name, strategy)
    return schemathesis.openapi.from_dict(DOCUMENT)


@pytest.mark.parametrize("role", list(TOKENS))
@pytest.mark.parametrize("label", LABELS)
def test_fuzz(label, role, server, fuzz_schema, fuzz_stats):
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    service, url = server
    operation = fuzz_schema.find_operation_by_label(label)
    assert operation is not None, label
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    path = {"instance": INSTANCE} if operation.path_parameters else None
    allowed = operation.definition.raw.get("x-aso-roles", list(TOKENS))
    examples = MAX_EXAMPLES[role] if role in allowed or role == "invalid" else MAX_EXAMPLES_FORBIDDEN
    session = requests.Session()
    failures: list[str] = []

    def fuzz(mode: GenerationMode) -> None:
        key = f"{label} [{role}, {mode.value}]"
        # The token and the instance are fixed: negative cases then break the parameters and
        # bodies, not the authentication (401) or the path (404), which the tests above cover.
        strategy = operation.as_strategy(generation_mode=mode, headers=headers, path_parameters=path)

        @settings(
            max_examples=examples,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def run(case):
            response = case.call(base_url=url, session=session, headers=headers, timeout=30)
            fuzz_stats.examples[key] += 1
            fuzz_stats.statuses[key][response.status_code] += 1
            if response.status_code >= 500:
                fuzz_stats.server_errors[key] += 1
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except FailureGroup as exc:
                names = sorted({c for f in exc.exceptions for c in (f.checks or (type(f).__name__,))})
                body = response.text
                if response.status_code >= 500:
                    # the exception behind it, from the server's log (one request at a time)
                    body += " / " + fuzz_stats.last_exception(service.log)
                finding = (label, role, ",".join(names), response.status_code, body[:200])
                curl = case.as_curl_command(headers=headers)
                if finding not in fuzz_stats.findings:
                    fuzz_stats.findings[finding] = {"checks": names, "body": body, "curl": curl, "count": 0}
                    failures.append(f"{response.status_code} {names}: {body[:300]}\n{curl}")
                fuzz_stats.findings[finding]["count"] += 1

        run()

    fuzz(GenerationMode.POSITIVE)
    if operation.query or operation.body:
        fuzz(GenerationMode.NEGATIVE)  # (nothing else to negate in /healthz and openapi.json)
    session.close()
    assert not failures, f"{label} as {role}: {len(failures)} distinct failures\n" + "\n\n".join(failures)
