"""Throttling end to end: 20 users, 5 sites, limits on sites and a link; after every
``aso transfer`` pass the files in flight per site and link (read from the state store)
are within the limits, and every file ends DONE."""

from __future__ import annotations

import json
from collections import defaultdict

from aso.state import backend_from_config
from tests.pipeline.conftest import installation, users_for
from tests.pipeline.harness import all_in

SITES = ("T2_XX_Source", "T2_YY_Dest", "T2_ZZ_Dest", "T2_AA_Dest", "T2_BB_Dest")
INCOMING = {"T2_YY_Dest": 6, "T2_ZZ_Dest": 5}
OUTGOING = {"T2_XX_Source": 12}
LINKS = {("T2_XX_Source", "T2_AA_Dest"): 3}
PAIRS = (("T2_XX_Source", "T2_YY_Dest"), ("T2_XX_Source", "T2_ZZ_Dest"), ("T2_XX_Source", "T2_AA_Dest"),
         ("T2_AA_Dest", "T2_YY_Dest"), ("T2_BB_Dest", "T2_ZZ_Dest"), ("T2_BB_Dest", "T2_AA_Dest"))


def _limit_config(inst) -> None:
    text = inst.config_path.read_text()
    for site, n in {**INCOMING}.items():
        text = text.replace(f"[sites.{site}]\n", f"[sites.{site}]\nmax_incoming = {n}\n")
    for site, n in OUTGOING.items():
        text = text.replace(f"[sites.{site}]\n", f"[sites.{site}]\nmax_outgoing = {n}\n")
    fts = inst.config.site("T2_XX_Source").fts
    for site in SITES[3:]:
        text += f'\n[sites.{site}]\nprefix = "{(inst.root / "sites" / site).as_uri()}"\nfts = "{fts}"\n'
    for (src, dst), n in LINKS.items():
        text += f'\n[[links]]\nsource = "{src}"\ndestination = "{dst}"\nmax_files = {n}\n'
    inst.config_path.write_text(text)
    from aso.config import load_config

    inst.config = load_config(str(inst.config_path))


def _in_flight(inst) -> tuple[dict, dict, dict]:
    backend = backend_from_config(inst.config)
    try:
        counts = backend.throttle_counts().inflight
    finally:
        backend.close()
    incoming, outgoing, links = defaultdict(int), defaultdict(int), defaultdict(int)
    for (_user, src, dst), n in counts.items():
        incoming[dst] += n
        outgoing[src] += n
        links[(src, dst)] += n
    return incoming, outgoing, links


def test_limits_hold_after_every_pass_and_everything_arrives(tmp_path, pki, fts):
    inst = installation(tmp_path, fts, "transfer.max_files_per_job=10")
    _limit_config(inst)
    users = users_for(pki, inst, 20)
    requests = inst.make_requests(users, 6, links=PAIRS, size=200)
    inst.inject(requests)
    peaks: dict = defaultdict(int)
    for i in range(40):
        out = inst.aso("transfer", "--json").stdout
        if i == 0:  # the first pass filled the limits: status says which ones rows wait on
            assert json.loads(out)["held"] > 0
            status = json.loads(inst.aso("status", "--json").stdout)
            waits = {(e["limit"], e.get("site") or (e["source"], e["destination"])): e for e in status["waiting_on_limits"]}
            assert waits and all(e["waiting"] > 0 and e["in_flight"] <= e["max"] for e in waits.values())
            # each group is listed under its strictest full limit (the smallest)
            assert set(waits) <= {("incoming", "T2_YY_Dest"), ("incoming", "T2_ZZ_Dest"),
                                  ("link", ("T2_XX_Source", "T2_AA_Dest")), ("outgoing", "T2_XX_Source")}
            assert "waiting on limits" in inst.aso("status").stdout
        incoming, outgoing, links = _in_flight(inst)
        for site, most in INCOMING.items():
            assert incoming[site] <= most, (site, incoming[site], out)
            peaks[site] = max(peaks[site], incoming[site])
        for site, most in OUTGOING.items():
            assert outgoing[site] <= most, (site, outgoing[site], out)
            peaks[site + " out"] = max(peaks[site + " out"], outgoing[site])
        for link, most in LINKS.items():
            assert links[link] <= most, (link, links[link], out)
            peaks[link] = max(peaks[link], links[link])
        inst.round("monitor", "reporter")
        if all_in("DONE")(inst.rows()):
            break
    rows = inst.rows()
    assert len(rows) == 120 and {r["tm_transfer_state"] for r in rows} == {"DONE"}
    # the limits were reached (they throttled), not merely never approached
    assert peaks["T2_XX_Source out"] == OUTGOING["T2_XX_Source"]
    for req in requests:
        assert inst.local_path(req["destination"], req["destination_lfn"]).read_bytes() == \
            inst.local_path(req["source"], req["source_lfn"]).read_bytes()
    status = inst.aso("status").stdout
    assert "transfers per state" in status and "no rows wait on limits" in status
