"""How the transfer pass cuts acquired rows into FTS jobs (:func:`plan_chunks`): direct rows
per link, a multi-hop row a job of its own with a transfer per hop, a row with no path set
aside with a NO_PATH reason; and the records that carry a multi-hop chunk."""

from __future__ import annotations

import itertools

from aso.components.handoffs import Chunk, MonitorEntry, SubmitRecord
from aso.components.transfer import plan_chunks
from aso.config import from_dict
from aso.topology import Topology
from aso.transfertools.base import HOP_KEY, HOPS_KEY


def topology(default_distance: int = 0) -> Topology:
    return from_dict({
        "topology": {"default_distance": default_distance},
        "sites": {
            "A": {"prefix": "file:///sites/A", "fts": "https://fts-a:8446"},
            "B": {"prefix": "file:///sites/B", "fts": "https://fts-b:8446", "available_for_multihop": True},
            "C": {"prefix": "file:///sites/C", "fts": "https://fts-c:8446"},
            "D": {"prefix": "file:///sites/D", "fts": "https://fts-d:8446"},
        },
        "links": [{"source": "A", "destination": "B", "fts": "https://fts-ab:8446"},
                  {"source": "B", "destination": "C"}, {"source": "C", "destination": "A"}],
    }).topology()


def row(i: int, source: str, destination: str, **extra) -> dict:
    return {"tm_id": f"{i:056x}", "tm_source": source, "tm_destination": destination, "tm_taskname": "task",
            "tm_source_lfn": f"/store/temp/user/u/out_{i}.root", "tm_destination_lfn": f"/store/user/u/out_{i}.root",
            "tm_filesize": 1000 + i, "tm_checksum": "0000abcd", **extra}


def sids():
    counter = itertools.count()
    return lambda: f"sid{next(counter)}"


def test_direct_rows_go_per_link_to_the_link_s_endpoint_in_chunks():
    rows = [row(i, "A", "B") for i in range(5)] + [row(10 + i, "B", "C") for i in range(2)]
    plan = plan_chunks(rows, topology(), 2, sids())
    assert [(c.endpoint, len(c.transfers), c.multihop) for c in plan.chunks] == [
        ("https://fts-ab:8446", 2, False), ("https://fts-ab:8446", 2, False), ("https://fts-ab:8446", 1, False),
        ("https://fts-c:8446", 2, False)]
    t = plan.chunks[0].transfers[0]
    assert (t.source, t.destination) == ("file:///sites/A/store/temp/user/u/out_0.root", "file:///sites/B/store/user/u/out_0.root")
    assert t.metadata == {"taskname": "task", "src_site": "A", "dst_site": "B"}  # as before paths existed
    assert not plan.no_path and not plan.unconfigured and not plan.bad


def test_a_multihop_row_is_a_chunk_of_its_own_with_a_transfer_per_hop():
    rows = [row(1, "A", "C"), row(2, "A", "C"), row(3, "A", "B")]
    plan = plan_chunks(rows, topology(), 50, sids())
    direct, *multihop = plan.chunks
    assert direct.ids() == [rows[2]["tm_id"]] and not direct.multihop
    assert [c.ids() for c in multihop] == [[rows[0]["tm_id"]], [rows[1]["tm_id"]]]
    chunk = multihop[0]
    assert chunk.multihop and chunk.path == "A>B>C"
    assert chunk.endpoint == "https://fts-ab:8446"  # the first link's: one job runs every hop
    scratch = f"file:///sites/B/store/temp/aso/multihop/{rows[0]['tm_id']}/out_1.root"
    assert [(t.source, t.destination) for t in chunk.transfers] == [
        ("file:///sites/A/store/temp/user/u/out_1.root", scratch), (scratch, "file:///sites/C/store/user/u/out_1.root")]
    for k, t in enumerate(chunk.transfers, 1):
        assert t.id == rows[0]["tm_id"] and t.filesize == 1001 and t.checksum == "0000abcd"
        assert t.metadata[HOP_KEY] == k and t.metadata[HOPS_KEY] == 2
    assert [(t.metadata["src_site"], t.metadata["dst_site"]) for t in chunk.transfers] == [("A", "B"), ("B", "C")]


def test_a_row_with_no_path_is_set_aside_with_a_no_path_reason():
    rows = [row(1, "A", "D"), row(2, "A", "B"), row(3, "A", "NOWHERE")]
    plan = plan_chunks(rows, topology(), 50, sids())
    assert [c.ids() for c in plan.chunks] == [[rows[1]["tm_id"]]]
    ((no_path_row, reason),) = plan.no_path
    assert no_path_row is rows[0] and reason.startswith("NO_PATH: no link or multi-hop path from A to D")
    assert plan.unconfigured == [(rows[2]["tm_id"], "sites.NOWHERE: no such site in the configuration")]


def test_an_lfn_that_cannot_become_a_url_is_bad():
    plan = plan_chunks([row(1, "A", "B", tm_destination_lfn="/store/user/../../etc/passwd")], topology(), 50, sids())
    assert not plan.chunks and len(plan.bad) == 1


def test_records_of_a_multihop_chunk():
    chunk = plan_chunks([row(1, "A", "C")], topology(), 50, sids()).chunks[0]
    doc = chunk.to_json()
    assert doc["path"] == "A>B>C"
    again = Chunk.from_json(doc)
    assert again == chunk and again.ids() == [row(1, "A", "C")["tm_id"]]  # one row, two hops
    assert SubmitRecord("u", 1, [chunk]).ids() == again.ids()
    direct = Chunk("s", "https://fts", chunk.transfers[:1])
    assert "path" not in direct.to_json() and not Chunk.from_json(direct.to_json()).multihop
    # the monitor follows the row from its first source to its last destination
    entry = MonitorEntry.new("job", "u", chunk.endpoint, 1, chunk.transfers)
    assert entry.files == {chunk.transfers[0].id: {"source": chunk.transfers[0].source,
                                                   "destination": chunk.transfers[-1].destination}}


def test_a_row_within_one_site_is_one_direct_copy_by_the_site_s_fts_with_or_without_links():
    """From a user's temporary area to their final one at the same site: not a link of the
    topology, and never NO_PATH (CRAB does this often)."""
    for default_distance in (0, 1):
        plan = plan_chunks([row(1, "D", "D"), row(2, "D", "D")], topology(default_distance), 50, sids())
        assert not plan.no_path
        assert [(c.endpoint, len(c.transfers), c.multihop, c.path) for c in plan.chunks] == [
            ("https://fts-d:8446", 2, False, "")]
        t = plan.chunks[0].transfers[0]
        assert (t.source, t.destination) == ("file:///sites/D/store/temp/user/u/out_1.root",
                                             "file:///sites/D/store/user/u/out_1.root")
