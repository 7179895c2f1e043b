"""Component passes in the state backend (sqlite, postgres, rest): one record per host and
component, replaced at each start and end, keeping when the instance last succeeded."""

from __future__ import annotations

import pytest

from aso.errors import ValidationError
from aso.state.records import PassRecord


def test_a_pass_is_running_then_ended_and_the_last_success_is_kept(backend):
    backend.record_pass(PassRecord("host-a.example", "transfer", 4242, "p1", 1_700_000_000.25))
    (rec,) = backend.component_passes()
    assert rec.running and rec.exit_code is None and rec.started == pytest.approx(1_700_000_000.25)
    backend.record_pass(PassRecord("host-a.example", "transfer", 4242, "p1", 1_700_000_000.25, 1_700_000_003.75, 0,
                                   120, 0, "transfer: 120 acquired"))
    (rec,) = backend.component_passes()
    assert not rec.running and rec.duration == pytest.approx(3.5) and rec.files == 120
    assert rec.last_success == pytest.approx(1_700_000_003.75) and rec.summary == "transfer: 120 acquired"
    # a later pass that fails: its own record, the last success stays the earlier one's
    backend.record_pass(PassRecord("host-a.example", "transfer", 4243, "p2", 1_700_000_060, 1_700_000_061, 3, 0, 1,
                                   "transfer: state server unreachable"))
    (rec,) = backend.component_passes()
    assert (rec.pass_id, rec.exit_code, rec.failures, rec.pid) == ("p2", 3, 1, 4243)
    assert rec.last_success == pytest.approx(1_700_000_003.75)


def test_each_host_and_component_has_its_own_record(backend):
    for host in ("b.example", "a.example"):
        for component in ("monitor", "reporter"):
            backend.record_pass(PassRecord(host, component, 1, f"{host}-{component}", 1_700_000_000, 1_700_000_001, 0))
    assert [(r.component, r.host) for r in backend.component_passes()] == [
        ("monitor", "a.example"), ("monitor", "b.example"), ("reporter", "a.example"), ("reporter", "b.example")]


@pytest.mark.parametrize(("field", "change"), [
    ("host", {"host": "a/../b"}),
    ("component", {"component": "rm -rf"}),
    ("pass_id", {"pass_id": "../x"}),
    ("finished_ms", {"started": 10.0, "finished": 5.0}),
    ("exit_code", {"exit_code": 256, "finished": 1_700_000_001.0}),
    ("summary", {"summary": "x" * 1001}),
])
def test_a_bad_record_is_refused_naming_the_field_and_changes_nothing(backend, field, change):
    values = {"host": "a.example", "component": "monitor", "pid": 1, "pass_id": "p", "started": 1_700_000_000.0}
    values.update(change)
    with pytest.raises(ValidationError) as err:
        backend.record_pass(PassRecord(**values))
    assert field in str(err.value)
    assert backend.component_passes() == []


@pytest.mark.parametrize(("field", "change"), [
    ("pid", {"pid": 2**31}),
    ("started_ms", {"started": 2**63 / 1000}),
    ("host", {"host": "a.example\n"}),
])
def test_values_beyond_the_columns_are_refused_not_a_server_error(backend, field, change):
    values = {"host": "a.example", "component": "monitor", "pid": 1, "pass_id": "p", "started": 1_700_000_000.0}
    values.update(change)
    with pytest.raises(ValidationError) as err:
        backend.record_pass(PassRecord(**values))
    assert field in str(err.value)
    assert backend.component_passes() == []
