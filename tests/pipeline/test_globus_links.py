"""One configuration, two tools: an fts3 link served by a real ``aso fts-server`` and a globus
link served by Globus as ``responses`` stands it in. The real transfer, monitor and reporter
passes (in this process, so ``responses`` sees their Globus requests; loopback requests pass
through to the real services) take the rows of both links to DONE, each component finding
the tool from the endpoint stored with the row and in the sandbox entries."""

from __future__ import annotations

import re

import responses

from aso.components.monitor import run_monitor
from aso.components.pipeline import PipelineSettings
from aso.components.reporter import run_reporter
from aso.components.retry_manager import run_retry_manager
from aso.components.transfer import run_transfer
from aso.config import load_config
from aso.credentials import proxy_source_from_config
from aso.sandbox import Sandbox
from aso.state import backend_from_config
from aso.transfertools import tool_factory_from_config, tool_kind
from tests.pipeline.conftest import installation, users_for
from tests.transfertools.globus_fake import AUTH, TRANSFER, FakeGlobus

COLL_SRC, COLL_DST = "0b7a2f3e-5c51-4b6e-9d1e-3c0f6f1a2b01", "6d2e1c4b-8a3f-4e7d-b2c9-1f0e9d8c7b02"
FTS_LINK, GLOBUS_LINK = ("T2_XX_Source", "T2_YY_Dest"), ("T2_XX_Source", "T2_ZZ_Dest")


def globus_installation(tmp_path, fts, pki):
    inst = installation(tmp_path, fts)
    (user,) = users_for(pki, inst, 1)
    secret = inst.root / "globus.secret"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    text = inst.config_path.read_text()
    text = text.replace("[globus]\n", f'[globus]\nclient_id = "aso-app"\nclient_secret_file = "{secret}"\n'
                        f'auth_url = "{AUTH}"\ntransfer_url = "{TRANSFER}"\nmax_backoff = 0.01\n', 1)
    text = text.replace("[sites.T2_XX_Source]\n", f'[sites.T2_XX_Source]\nglobus_collection = "{COLL_SRC}"\n')
    text = text.replace("[sites.T2_ZZ_Dest]\n", f'[sites.T2_ZZ_Dest]\nglobus_collection = "{COLL_DST}"\n')
    text += '\n[[links]]\nsource = "T2_XX_Source"\ndestination = "T2_ZZ_Dest"\ntransfertool = "globus"\n'
    inst.config_path.write_text(text)
    inst.config = load_config(str(inst.config_path))
    return inst, user


def test_fts3_and_globus_links_in_one_pass_end_done(tmp_path, fts, pki):
    inst, user = globus_installation(tmp_path, fts, pki)
    requests = inst.make_requests([user], 6, links=(FTS_LINK, GLOBUS_LINK))
    inst.inject(requests)
    config = inst.config
    backend = backend_from_config(config)
    proxies, settings = proxy_source_from_config(config), PipelineSettings.from_config(config)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            rsps.add_passthru(re.compile(r"https?://(localhost|127\.0\.0\.1)[:/]"))
            globus = FakeGlobus(rsps)
            summary = run_transfer(backend, proxies, tool_factory_from_config(config), config.topology(), settings)
            assert (summary.files, summary.jobs, summary.errors) == (6, 2, [])
            rows = backend.list_transfers(limit=100)
            endpoints = {(r["tm_source"], r["tm_destination"]): r["tm_fts_instance"] for r in rows}
            assert tool_kind(endpoints[FTS_LINK]) == "fts3" and endpoints[FTS_LINK] == fts.url
            assert endpoints[GLOBUS_LINK] == "globus+" + TRANSFER
            (task_id,) = globus.tasks
            assert {r["tm_fts_id"] for r in rows if r["tm_destination"] == "T2_ZZ_Dest"} == {task_id}
            entries = {e.name: Sandbox(settings.sandbox_root, "monitor").load_record(e)
                       for e in Sandbox(settings.sandbox_root, "monitor").entries()}
            assert entries[task_id].endpoint == "globus+" + TRANSFER

            # Globus says the task moved its three files; the FTS job runs for real
            globus.finish(task_id)
            for _ in range(60):
                run_monitor(proxies, tool_factory_from_config(config), settings)
                run_reporter(backend, settings)
                states = {r["tm_id"]: r["tm_transfer_state"] for r in backend.list_transfers(limit=100)}
                if set(states.values()) == {"DONE"}:
                    break
                run_transfer(backend, proxies, tool_factory_from_config(config), config.topology(), settings)
            assert set(states.values()) == {"DONE"}, states
            # nothing left in flight, nothing submitted twice, and the retry manager has nothing to recover
            assert len(globus.submissions) == 1
            assert inst.sandbox_entries() == {kind: 0 for kind in inst.sandbox_entries()}
            assert run_retry_manager(backend, proxies, tool_factory_from_config(config), settings).killed == 0
    finally:
        backend.close()
    for request in requests:  # the fts3 link's files were really copied
        if (request["source"], request["destination"]) == FTS_LINK:
            assert inst.local_path(request["destination"], request["destination_lfn"]).exists()


def test_killing_the_rows_of_a_globus_task_cancels_the_task(tmp_path, fts, pki):
    inst, user = globus_installation(tmp_path, fts, pki)
    inst.inject(inst.make_requests([user], 3, links=(GLOBUS_LINK,)))
    config = inst.config
    backend = backend_from_config(config)
    proxies, settings = proxy_source_from_config(config), PipelineSettings.from_config(config)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            globus = FakeGlobus(rsps)
            run_transfer(backend, proxies, tool_factory_from_config(config), config.topology(), settings)
            (task_id,) = globus.tasks
            rows = backend.list_transfers(limit=100)
            # one row killed: Globus cannot cancel one file of a task, so the task runs on
            backend.request_kill(ids=[rows[0]["tm_id"]])
            summary = run_retry_manager(backend, proxies, tool_factory_from_config(config), settings)
            assert globus.canceled == [] and summary.kill_pending == 1
            # all of them: the whole task is canceled, and the rows end KILLED
            backend.request_kill(ids=[r["tm_id"] for r in rows])
            summary = run_retry_manager(backend, proxies, tool_factory_from_config(config), settings)
            assert globus.canceled == [task_id] and summary.canceled_jobs == 1 and summary.killed == 3
            states = {r["tm_transfer_state"] for r in backend.list_transfers(limit=100)}
            assert states == {"KILLED"}
    finally:
        backend.close()


def test_a_task_globus_created_whose_answer_was_lost_is_found_again_not_resubmitted(tmp_path, fts, pki):
    inst, user = globus_installation(tmp_path, fts, pki)
    inst.inject(inst.make_requests([user], 2, links=(GLOBUS_LINK,)))
    config = inst.config
    backend = backend_from_config(config)
    proxies, settings = proxy_source_from_config(config), PipelineSettings.from_config(config)
    try:
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            globus = FakeGlobus(rsps)
            globus.lose_submission_answers = True
            summary = run_transfer(backend, proxies, tool_factory_from_config(config), config.topology(), settings)
            # Globus made the task, aso never heard: the chunk is kept, its rows stay ACQUIRED
            assert summary.unreachable == ["globus+" + TRANSFER] and len(globus.tasks) == 1
            assert {r["tm_transfer_state"] for r in backend.list_transfers(limit=10)} == {"ACQUIRED"}
            assert inst.sandbox_entries()["submit"] == 1
            globus.lose_submission_answers = False
            summary = run_transfer(backend, proxies, tool_factory_from_config(config), config.topology(), settings)
            (task_id,) = globus.tasks
            assert summary.replayed == 1 and len(globus.tasks) == 1  # found by its label, not submitted again
            assert {r["tm_fts_id"] for r in backend.list_transfers(limit=10)} == {task_id}
            globus.finish(task_id)
            run_monitor(proxies, tool_factory_from_config(config), settings)
            run_reporter(backend, settings)
            assert {r["tm_transfer_state"] for r in backend.list_transfers(limit=10)} == {"DONE"}
    finally:
        backend.close()
