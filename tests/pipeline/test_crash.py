"""Crash safety: ``aso transfer``, ``aso monitor`` and ``aso reporter`` killed with SIGKILL at
random moments (seeded), many times, then left to finish: every file ends DONE exactly once,
and FTS received each chunk once (every row is in exactly one FTS job)."""

from __future__ import annotations

import os
import random
import signal
import subprocess

from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import all_in, fts_jobs_by_row
from tests.procs import aso_command

SEED = 20261122


def test_components_killed_at_random_moments(tmp_path, pki, fts, backend_settings):
    rng = random.Random(SEED)
    inst = installation(tmp_path, fts, *backend_settings, "transfer.max_files_per_job=7")
    users = users_for(pki, inst, 3)
    requests = inst.make_requests(users, 40)
    inst.inject(requests)
    kills = 0
    for _ in range(90):
        component = rng.choice(("transfer", "monitor", "reporter"))
        proc = subprocess.Popen(aso_command("--config", str(inst.config_path), component), cwd=inst.root,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            proc.wait(rng.uniform(0.1, 0.8))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
    assert kills >= 20, f"only {kills} passes were killed mid-way; the test did not test much"

    inst.run_until(all_in("DONE"))
    rows = inst.rows()
    assert len(rows) == 120 and {r["tm_transfer_state"] for r in rows} == {"DONE"}
    jobs = fts_jobs_by_row(fts.db)
    assert all(len(jobs[r["tm_id"]]) == 1 for r in rows), {r["tm_id"]: jobs[r["tm_id"]] for r in rows if len(jobs[r["tm_id"]]) != 1}
    assert all(r["tm_fts_id"] == jobs[r["tm_id"]][0] for r in rows)
    for req in requests:
        assert inst.local_path(req["destination"], req["destination_lfn"]).read_bytes() == \
            inst.local_path(req["source"], req["source_lfn"]).read_bytes()
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
