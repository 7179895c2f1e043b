"""The transfer pipeline end to end, as an operator runs it: ``aso init``, ``aso inject``,
then ``aso transfer``, ``aso monitor``, ``aso reporter`` (and ``aso retry-manager``) passes,
against a real ``aso fts-server`` over HTTPS, with the users' proxies retrieved from a real
``myproxy-server`` under CRAB's credential names, and the state backend in process (SQLite)
and over REST (a real ``aso server``)."""

from __future__ import annotations

import itertools

from aso.credentials.myproxy import crab_credential_name
from tests.pipeline.conftest import installation
from tests.pipeline.harness import all_in, fts_jobs_by_row

ACCOUNT = "crab-rest.example.org"
_names = itertools.count()


def test_300_files_3_users_3_links(tmp_path, pki, fts, myproxy, backend_settings):
    users = [pki.add_user(f"e2e{next(_names)}") for _ in range(3)]
    for user in users:  # what each user's CRAB client does: myproxy-init -n -x -Z <service DN>
        myproxy.store(crab_credential_name(user.dn, ACCOUNT), user.cert_path, user.key_path, myproxy.service_dn)
    dns = ", ".join(f'{u.name} = "{u.dn}"' for u in users)
    inst = installation(
        tmp_path, fts, *backend_settings, 'credentials.source="myproxy"', 'credentials.myproxy_server="localhost"',
        f"credentials.myproxy_port={myproxy.port}", f'credentials.myproxy_account="{ACCOUNT}"',
        f'credentials.service_cert="{myproxy.service_cert}"', f'credentials.service_key="{myproxy.service_key}"',
        f'credentials.ca_dir="{myproxy.ca_dir}"', f"credentials.user_dns={{{dns}}}",
    )
    users = [u.name for u in users]
    requests = inst.make_requests(users, 100)
    inst.inject(requests)
    inst.run_until(all_in("DONE"))

    rows = inst.rows()
    assert len(rows) == 300 and {r["tm_transfer_state"] for r in rows} == {"DONE"}
    for req in requests:
        src = inst.local_path(req["source"], req["source_lfn"])
        dst = inst.local_path(req["destination"], req["destination_lfn"])
        assert dst.read_bytes() == src.read_bytes(), dst
    assert inst.sandbox_entries() == {"monitor": 0, "reporter": 0, "submit": 0, "stage": 0}
    # one FTS job per user, link and chunk of at most 50: every row in exactly one job
    jobs = fts_jobs_by_row(fts.db)
    assert all(len(jobs[r["tm_id"]]) == 1 for r in rows)
    assert len({j for r in rows for j in jobs[r["tm_id"]]}) == 3 * 3  # 100 files / 3 links = 34, 33, 33 per user
    assert {r["tm_fts_instance"] for r in rows} == {fts.url}

    # the proxies came from MyProxy, cached private, one per user
    cache = inst.root / "proxy-cache"
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{u}.pem" for u in users)
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in cache.iterdir())
    assert not any((inst.root / "proxies").iterdir())  # nothing in the directory source

    # a second round has nothing to do
    out = inst.aso("transfer", "--json").stdout
    assert '"files": 0' in out
