"""The chaos run of tests/pipeline/chaos.py, short and seeded: components in parallel loops
killed at random instants, FTS and the state server restarted, kills while submissions are
pending; then every invariant checked (no row lost or stuck, no file in two FTS jobs beyond
its retries, no catalog duplicate, no KILLED row with a destination file)."""

from __future__ import annotations

from tests.pipeline.chaos import ChaosSettings, run_chaos


def test_chaos_short_seeded_run(tmp_path, pki):
    report = run_chaos(pki, tmp_path, ChaosSettings(seed=20261130, users=3, files_per_user=40, seconds=30))
    print(f"chaos: {report.files} files, passes {dict(report.passes)}, {report.sigkills} SIGKILLs, "
          f"{report.fts_restarts} FTS and {report.state_restarts} state-server restarts, "
          f"killed tasks {report.killed_tasks}, drained in {report.drain_rounds} rounds, states {dict(report.states)}")
    assert report.sigkills >= 10, "too few passes were killed mid-way: the run tested little"
    assert report.fts_restarts and report.state_restarts and report.killed_tasks
    assert not report.problems, "\n".join(report.problems[:40])


def test_chaos_with_push_monitoring(tmp_path, pki):
    """The same chaos with completion messages over RabbitMQ and aso receiver killed or
    stopped at random instants beside the others: nothing lost, nothing reported twice."""
    report = run_chaos(pki, tmp_path, ChaosSettings(seed=20261201, users=3, files_per_user=30, seconds=35, push=True))
    print(f"chaos with push: {report.files} files, passes {dict(report.passes)}, {report.sigkills} SIGKILLs, "
          f"{report.received} files handed over by receivers, drained in {report.drain_rounds} rounds, "
          f"states {dict(report.states)}")
    assert report.passes["receiver"] >= 5 and report.sigkills >= 10
    assert report.received > 0, "no receiver handed anything over: the run did not test push monitoring"
    assert not report.problems, "\n".join(report.problems[:40])


def test_chaos_with_multihop_paths(tmp_path, pki):
    """The same chaos when a third of the files can only go over a two-hop path (no direct
    link): every one DONE once, over its path, and no intermediate copy left behind."""
    report = run_chaos(pki, tmp_path, ChaosSettings(seed=20261202, users=3, files_per_user=30, seconds=25, multihop=True))
    print(f"chaos with multihop: {report.files} files, passes {dict(report.passes)}, {report.sigkills} SIGKILLs, "
          f"drained in {report.drain_rounds} rounds, states {dict(report.states)}")
    assert report.sigkills >= 10
    assert not report.problems, "\n".join(report.problems[:40])
