"""Every component pass run from the command line is recorded in the state backend: how
the operators' page knows which component ran where, when, how long and how it ended."""

from __future__ import annotations

import socket

from aso.state import backend_from_config
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import all_in


def test_passes_are_recorded_with_their_outcome(tmp_path, pki, fts):
    inst = installation(tmp_path, fts)
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 3))
    inst.run_until(all_in("DONE"))
    inst.aso("retry-manager")
    backend = backend_from_config(inst.config)
    try:
        passes = {r.component: r for r in backend.component_passes()}
    finally:
        backend.close()
    assert set(passes) == {"transfer", "monitor", "reporter", "retry-manager"}
    for record in passes.values():
        assert record.host == socket.gethostname() and not record.running
        assert record.exit_code == 0 and record.last_success == record.finished
    assert passes["reporter"].summary.startswith("reporter:")


def test_a_pass_that_cannot_reach_fts_is_recorded_with_exit_code_3(tmp_path, pki):
    from tests.procs import free_port

    inst = installation(tmp_path, type("Down", (), {"url": f"https://127.0.0.1:{free_port()}", "ca_dir": tmp_path})(),
                        "fts.timeout=2")
    (user,) = users_for(pki, inst, 1)
    inst.inject(inst.make_requests([user], 1))
    assert inst.aso("transfer", check=False).returncode == 3
    backend = backend_from_config(inst.config)
    try:
        (record,) = backend.component_passes()
    finally:
        backend.close()
    assert (record.component, record.exit_code, record.last_success) == ("transfer", 3, None)
    assert record.failures >= 1
