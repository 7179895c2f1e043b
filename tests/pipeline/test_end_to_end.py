"""The transfer pipeline end to end, as an operator runs it: ``aso init``, ``aso inject``,
then ``aso transfer``, ``aso monitor``, ``aso reporter`` (and ``aso retry-manager``) passes,
against a real ``aso fts-server`` over HTTPS with test proxies, with the state backend in
process (SQLite) and over REST (a real ``aso server``)."""

from __future__ import annotations

from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import all_in, fts_jobs_by_row


def test_300_files_3_users_3_links(tmp_path, pki, fts, backend_settings):
    inst = installation(tmp_path, fts, *backend_settings)
    users = users_for(pki, inst, 3)
    requests = inst.make_requests(users, 100)
    inst.inject(requests)
    inst.run_until(all_in("DONE"))

    rows = inst.rows()
    assert len(rows) == 300 and {r["tm_transfer_state"] for r in rows} == {"DONE"}
    for req in requests:
        src = inst.local_path(req["source"], req["source_lfn"])
        dst = inst.local_path(req["destination"], req["destination_lfn"])
        assert dst.read_bytes() == src.read_bytes(), dst
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0}
    # one FTS job per user, link and chunk of at most 50: every row in exactly one job
    jobs = fts_jobs_by_row(fts.db)
    assert all(len(jobs[r["tm_id"]]) == 1 for r in rows)
    assert len({j for r in rows for j in jobs[r["tm_id"]]}) == 3 * 3  # 100 files / 3 links = 34, 33, 33 per user
    assert {r["tm_fts_instance"] for r in rows} == {fts.url}

    # a second round has nothing to do
    out = inst.aso("transfer", "--json").stdout
    assert '"files": 0' in out
