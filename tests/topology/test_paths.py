"""Path selection (Rucio's rule) on the seed topology, and against a brute-force reference
on random graphs."""

from __future__ import annotations

from itertools import permutations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aso.config import from_dict
from aso.errors import ConfigError
from aso.topology import NoPathError, Topology
from aso.topology.paths import Edge, shortest_path

SEED_LINKS = (("RSE1", "RSE2", 5), ("RSE1", "RSE3", 100), ("RSE2", "RSE3", 3), ("RSE3", "RSE4", 2))


def seed(hop_penalty: int = 10, multihop: dict[str, bool] | None = None, max_hops: int = 3,
         default_distance: int = 0, site_penalty: dict[str, int] | None = None,
         links=SEED_LINKS) -> Topology:
    """The four-site example: RSE1-RSE2 5, RSE1-RSE3 100, RSE2-RSE3 3, RSE3-RSE4 2, both ways."""
    multihop = multihop or {}
    sites = {}
    for i in range(1, 5):
        name = f"RSE{i}"
        sites[name] = {"prefix": f"file:///sites/{name}", "fts": "https://fts.example:8446",
                       "available_for_multihop": multihop.get(name, True)}
        if site_penalty and name in site_penalty:
            sites[name]["hop_penalty"] = site_penalty[name]
    return from_dict({
        "topology": {"default_distance": default_distance, "hop_penalty": hop_penalty, "max_hops": max_hops},
        "sites": sites,
        "links": [{"source": a, "destination": b, "distance": d, "both_ways": True} for a, b, d in links],
    }).topology()


def test_the_cheapest_path_goes_over_two_intermediate_sites():
    route = seed().route("RSE1", "RSE4")
    # 5 + 3 + 2 + two penalties of 10 = 30, against 100 + 2 + 10 = 112
    assert route.path.text() == "RSE1>RSE2>RSE3>RSE4" and route.path.cost == 30
    assert route.is_multihop and route.path.hops == 3
    assert [(link.source, link.destination) for link in route.links] == [("RSE1", "RSE2"), ("RSE2", "RSE3"), ("RSE3", "RSE4")]
    assert seed().route("RSE4", "RSE1").path.text() == "RSE4>RSE3>RSE2>RSE1"  # both ways


def test_a_high_hop_penalty_prefers_fewer_hops():
    route = seed(hop_penalty=100).route("RSE1", "RSE4")
    # 100 + 2 + 100 = 202 against 5 + 3 + 2 + 200 = 210
    assert route.path.text() == "RSE1>RSE3>RSE4" and route.path.cost == 202


def test_a_site_s_own_hop_penalty_wins():
    assert seed(site_penalty={"RSE2": 1000}).route("RSE1", "RSE4").path.text() == "RSE1>RSE3>RSE4"


def test_a_site_not_available_for_multihop_is_never_intermediate():
    assert seed(multihop={"RSE2": False}).route("RSE1", "RSE4").path.text() == "RSE1>RSE3>RSE4"
    # it may still end a path, and start one
    assert seed(multihop={"RSE2": False}).route("RSE1", "RSE2").path.text() == "RSE1>RSE2"
    with pytest.raises(NoPathError, match=r"^NO_PATH: no link or multi-hop path from RSE1 to RSE4"):
        seed(multihop={"RSE2": False, "RSE3": False}).route("RSE1", "RSE4")


def test_no_path_is_an_error_that_says_so_once_per_pair():
    topology = seed(links=(("RSE1", "RSE2", 5),))
    with pytest.raises(NoPathError, match=r"^NO_PATH: ") as first:
        topology.route("RSE1", "RSE4")
    with pytest.raises(NoPathError) as second:
        topology.route("RSE1", "RSE4")
    assert second.value is first.value  # the cache remembers the pair has no path
    with pytest.raises(ConfigError, match="sites.NOPE"):
        topology.route("RSE1", "NOPE")


def test_direct_is_preferred_on_equal_cost():
    # RSE1>RSE3 direct costs 100; over RSE2: 5 + 3 + a penalty of 92 = 100 too
    assert seed(hop_penalty=92).route("RSE1", "RSE3").path.text() == "RSE1>RSE3"
    assert seed(hop_penalty=91).route("RSE1", "RSE3").path.text() == "RSE1>RSE2>RSE3"


def test_max_hops_is_respected():
    assert seed(max_hops=2).route("RSE1", "RSE4").path.text() == "RSE1>RSE3>RSE4"
    with pytest.raises(NoPathError):
        seed(max_hops=1).route("RSE1", "RSE4")
    assert seed(max_hops=1).route("RSE1", "RSE2").path.text() == "RSE1>RSE2"


def test_default_distance_1_keeps_every_pair_direct():
    sites = {f"S{i}": {"prefix": f"file:///sites/S{i}", "fts": f"https://fts{i}.example:8446",
                       "available_for_multihop": True} for i in range(4)}
    topology = from_dict({"sites": sites}).topology()  # no [[links]]: the default distance 1
    for a, b in permutations(sites, 2):
        route = topology.route(a, b)
        assert route.path.sites == (a, b) and not route.is_multihop
        assert route.endpoint == sites[b]["fts"]  # FTS chosen by the destination, as before links
        assert not route.links[0].configured


def test_a_link_s_endpoint_serves_the_route():
    topology = from_dict({
        "topology": {"default_distance": 0},
        "sites": {"A": {"prefix": "file:///a", "fts": "https://fts-a:8446"},
                  "B": {"prefix": "file:///b", "fts": "https://fts-b:8446", "available_for_multihop": True},
                  "C": {"prefix": "file:///c", "fts": "https://fts-c:8446"}},
        "links": [{"source": "A", "destination": "B", "fts": "https://fts-ab:8446"},
                  {"source": "B", "destination": "C"}],
    }).topology()
    assert topology.route("A", "B").endpoint == "https://fts-ab:8446"
    assert topology.route("B", "C").endpoint == "https://fts-c:8446"
    route = topology.route("A", "C")
    assert route.path.text() == "A>B>C" and route.endpoint == "https://fts-ab:8446"  # the first link's


def test_hop_urls_name_a_deterministic_scratch_copy():
    topology = seed()
    route = topology.route("RSE1", "RSE3")
    assert route.path.text() == "RSE1>RSE2>RSE3"
    row = "a" * 56
    urls = topology.hop_urls(route, row, "/store/temp/user/u/out.root", "/store/user/u/out.root")
    scratch = f"file:///sites/RSE2/store/temp/aso/multihop/{row}/out.root"
    assert urls == [("file:///sites/RSE1/store/temp/user/u/out.root", scratch),
                    (scratch, "file:///sites/RSE3/store/user/u/out.root")]
    assert topology.hop_urls(route, row, "/store/temp/user/u/out.root", "/store/user/u/out.root") == urls


# -- against a reference on random graphs -----------------------------------------------


def reference(source, destination, distances, penalty, hop_sites, max_hops):
    """Every simple path, cost = distances + the penalty of each intermediate site; the
    least by (cost, hops, sites)."""
    names = sorted({s for pair in distances for s in pair})
    best = None

    def walk(path, cost):
        nonlocal best
        here = path[-1]
        if here == destination:
            label = (cost, len(path) - 1, tuple(path))
            best = label if best is None or label < best else best
            return
        if here != source and here not in hop_sites:
            return
        if max_hops and len(path) - 1 >= max_hops:
            return
        extra = penalty[here] if here != source else 0
        for nxt in names:
            if nxt not in path and (here, nxt) in distances:
                walk(path + [nxt], cost + extra + distances[(here, nxt)])

    walk([source], 0)
    return best


@st.composite
def graphs(draw):
    n = draw(st.integers(2, 7))
    names = [f"S{i}" for i in range(n)]
    pairs = [(a, b) for a in names for b in names if a != b]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    distances = {pair: draw(st.integers(1, 20)) for pair in chosen}
    penalty = {name: draw(st.integers(0, 15)) for name in names}
    hop_sites = {name for name in names if draw(st.booleans())}
    max_hops = draw(st.integers(0, 6))
    source, destination = draw(st.permutations(names))[:2]
    return source, destination, distances, penalty, hop_sites, max_hops


@settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_the_path_is_the_reference_s_on_random_graphs(graph):
    source, destination, distances, penalty, hop_sites, max_hops = graph
    edges: dict[str, list[Edge]] = {}
    for (a, b), d in distances.items():
        edges.setdefault(a, []).append(Edge(a, b, d))
    want = reference(source, destination, distances, penalty, hop_sites, max_hops)
    if want is None:
        with pytest.raises(NoPathError, match="^NO_PATH: "):
            shortest_path(source, destination, edges, penalty, hop_sites, max_hops)
        return
    got = shortest_path(source, destination, edges, penalty, hop_sites, max_hops)
    assert (got.cost, got.hops, got.sites) == want
