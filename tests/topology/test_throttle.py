"""The throttling rule: allocate (how many rows of each group a pass takes), explain (why
the others wait), and the limits' JSON form."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aso.config import from_dict
from aso.errors import ValidationError
from aso.topology.throttle import ThrottleLimits, allocate, explain, held_back, water_level

SITES = ["A", "B", "C", "D"]


def _per_resource(counts, limits):
    out = defaultdict(int)
    for (_user, src, dst), n in counts.items():
        for r, _most in limits.resources(src, dst):
            out[r] += n
    return out


def _maxima(limits):
    m = {("incoming", s): n for s, n in limits.incoming.items()}
    m.update({("outgoing", s): n for s, n in limits.outgoing.items()})
    m.update({("link", p): n for p, n in limits.links.items()})
    return m


# -- examples --------------------------------------------------------------------------------
def test_no_limits_takes_everything_up_to_the_per_user_limit():
    waiting = {("alice", "A", "B"): 5, ("alice", "A", "C"): 7, ("bob", "A", "B"): 3}
    assert allocate({}, waiting, ThrottleLimits(), 100) == waiting
    taken = allocate({}, waiting, ThrottleLimits(), 6)
    assert taken[("bob", "A", "B")] == 3 and taken[("alice", "A", "B")] + taken[("alice", "A", "C")] == 6


def test_a_full_site_takes_nothing_and_freed_capacity_goes_to_the_user_who_holds_least():
    limits = ThrottleLimits(incoming={"B": 10})
    inflight = {("alice", "A", "B"): 9}
    waiting = {("alice", "A", "B"): 100, ("bob", "C", "B"): 100}
    assert allocate(inflight, waiting, limits, 1000) == {("bob", "C", "B"): 1}
    assert allocate({("alice", "A", "B"): 10}, waiting, limits, 1000) == {}
    # 6 free: bob (0 in flight) is raised to alice's 4 first, then they share
    got = allocate({("alice", "A", "B"): 4}, waiting, limits, 1000)
    assert got == {("bob", "C", "B"): 5, ("alice", "A", "B"): 1}


def test_limits_lowered_below_what_is_in_flight_take_nothing():
    limits = ThrottleLimits(links={("A", "B"): 2})
    assert allocate({("alice", "A", "B"): 5}, {("alice", "A", "B"): 3}, limits, 10) == {}


def test_every_limit_of_a_group_counts():
    limits = ThrottleLimits(incoming={"B": 100}, outgoing={"A": 3}, links={("A", "B"): 50})
    got = allocate({}, {("alice", "A", "B"): 10, ("bob", "A", "C"): 10}, limits, 100)
    assert sum(got.values()) == 3


def test_without_fair_share_the_oldest_group_goes_first():
    limits = ThrottleLimits(incoming={"B": 4}, fair_share=False)
    waiting = {("alice", "A", "B"): 10, ("bob", "A", "B"): 10}
    assert allocate({}, waiting, limits, 100, oldest={("alice", "A", "B"): 20, ("bob", "A", "B"): 10}) == {("bob", "A", "B"): 4}


def test_limited_groups_are_served_before_the_per_user_limit_goes_to_free_ones():
    limits = ThrottleLimits(incoming={"B": 5})
    got = allocate({}, {("alice", "A", "B"): 10, ("alice", "A", "C"): 10}, limits, 8)
    assert got == {("alice", "A", "B"): 5, ("alice", "A", "C"): 3}


def test_water_level():
    assert water_level([(0, 10), (4, 10)], 6) == 5  # 5 + 1 = 6
    assert water_level([(0, 10), (4, 10)], 5) == 4  # 4 + 0, one left over for a tie
    assert water_level([(0, 2), (0, 3)], 100) == 3  # everyone's room fits


def test_explain_names_the_strictest_full_limit():
    limits = ThrottleLimits(incoming={"B": 5}, links={("A", "B"): 3}, outgoing={"A": 100})
    inflight = {("alice", "A", "B"): 3, ("bob", "C", "B"): 1}
    waiting = {("alice", "A", "B"): 7, ("bob", "C", "B"): 4}
    entries = explain(inflight, waiting, limits)
    # the link is full (3/3): alice's 7 wait on it; B has 1 free, bob takes it, 3 wait on B
    assert entries == [
        {"limit": "link", "source": "A", "destination": "B", "max": 3, "in_flight": 3, "waiting": 7},
        {"limit": "incoming", "site": "B", "max": 5, "in_flight": 4, "waiting": 3},
    ]
    assert held_back(inflight, waiting, {("bob", "C", "B"): 1}, limits) == {("link", ("A", "B")): 7, ("incoming", "B"): 3}


def test_limits_from_the_configuration_and_back_through_json():
    config = from_dict({
        "sites": {"A": {"prefix": "file:///a", "fts": "https://f", "max_outgoing": 7},
                  "B": {"prefix": "file:///b", "fts": "https://f", "max_incoming": 5}},
        "links": [{"source": "A", "destination": "B", "max_files": 3}],
        "topology": {"fair_share": False},
    })
    limits = ThrottleLimits.from_topology(config.topology())
    assert limits == ThrottleLimits({"B": 5}, {"A": 7}, {("A", "B"): 3}, False)
    assert not limits.is_empty() and ThrottleLimits().is_empty()
    assert ThrottleLimits.from_json(limits.to_json()) == limits
    assert ThrottleLimits.from_topology(from_dict({}).topology()).is_empty()


@pytest.mark.parametrize(("document", "field"), [
    ([], "limits"),
    ({"links": [{"source": "A", "destination": "B", "max_files": 1}] * 2}, "limits.links[1]"),
    ({"links": [{"source": "A", "destination": "B", "max_files": 1}, {"source": "A", "destination": "C", "max_files": 1},
                {"source": "A", "destination": "D", "max_files": -1}]}, "limits.links[2].max_files"),
    ({"incoming": [{"site": "x/y", "max_files": 1}]}, "limits.incoming[0].site"),
    ({"outgoing": [{"site": "A", "max_files": "3"}]}, "limits.outgoing[0].max_files"),
    ({"outgoing": [{"site": "A", "max_files": True}]}, "limits.outgoing[0].max_files"),
    ({"outgoing": {"site": "A"}}, "limits.outgoing"),
    ({"links": [{"source": "A", "destination": "B", "max_files": 1, "x": 1}]}, "limits.links[0].x"),
    ({"fair_share": "yes"}, "limits.fair_share"),
    ({"other": 1}, "limits.other"),
])
def test_bad_limits_name_the_field(document, field):
    with pytest.raises(ValidationError) as err:
        ThrottleLimits.from_json(document)
    assert err.value.field == field


def big_case(seed: int = 7) -> tuple[dict, dict, ThrottleLimits]:
    """100k waiting rows over 1,000 users and 400 links (most groups of one row: the worst
    case for per-group work), every site and link limited; benchmarks/throttle.py times it."""
    import random

    rng = random.Random(seed)
    sites = [f"S{i:02d}" for i in range(20)]
    links = [(a, b) for a in sites for b in sites if a != b][:400]
    users = [f"u{i}" for i in range(1000)]
    waiting: dict = defaultdict(int)
    for _ in range(100_000):
        waiting[(rng.choice(users), *rng.choice(links))] += 1
    inflight: dict = defaultdict(int)
    for _ in range(20_000):
        inflight[(rng.choice(users), *rng.choice(links))] += 1
    limits = ThrottleLimits(incoming={s: 2000 for s in sites}, outgoing={s: 3000 for s in sites},
                            links={link: 300 for link in links})
    return inflight, waiting, limits


def test_the_big_case_holds_every_limit():
    inflight, waiting, limits = big_case()
    got = allocate(inflight, waiting, limits, 10000)
    assert 0 < sum(got.values()) < sum(waiting.values())
    for kind, key, limit in [("incoming", 2, limits.incoming), ("outgoing", 1, limits.outgoing)]:
        for site, most in limit.items():
            used = sum(n for g, n in inflight.items() if g[key] == site) + sum(n for g, n in got.items() if g[key] == site)
            assert used <= max(most, sum(n for g, n in inflight.items() if g[key] == site)), (kind, site)
    for link, most in limits.links.items():
        held = sum(n for g, n in inflight.items() if g[1:] == link)
        assert held + sum(n for g, n in got.items() if g[1:] == link) <= max(most, held), link


# -- properties ------------------------------------------------------------------------------
USERS = ["u1", "u2", "u3", "u4"]
groups = st.tuples(st.sampled_from(USERS), st.sampled_from(SITES), st.sampled_from(SITES))
counts = st.dictionaries(groups, st.integers(0, 30), max_size=20)
site_limits = st.dictionaries(st.sampled_from(SITES), st.integers(1, 25), max_size=4)
link_limits = st.dictionaries(st.tuples(st.sampled_from(SITES), st.sampled_from(SITES)), st.integers(1, 25), max_size=6)
limit_sets = st.builds(ThrottleLimits, site_limits, site_limits, link_limits, st.booleans())


@settings(max_examples=400, deadline=None)
@given(inflight=counts, waiting=counts, limits=limit_sets, per_user=st.integers(0, 60))
def test_allocation_properties(inflight, waiting, limits, per_user):
    got = allocate(inflight, waiting, limits, per_user)
    maxima = _maxima(limits)
    before = _per_resource(inflight, limits)
    after = _per_resource({g: inflight.get(g, 0) + got.get(g, 0) for g in set(inflight) | set(got)}, limits)
    per_user_got = defaultdict(int)
    for g, n in got.items():
        assert 0 < n <= waiting.get(g, 0)  # never more than a group's waiting rows
        per_user_got[g[0]] += n
    assert all(n <= per_user for n in per_user_got.values())  # nor the per-pass limit
    for r, most in maxima.items():
        # never over a limit (one already over because it was lowered gains nothing)
        assert after[r] <= max(most, before[r]) and (after[r] == before[r] or after[r] <= most)
    full = {r for r, most in maxima.items() if after[r] >= most}
    for g, n in waiting.items():
        rest = n - got.get(g, 0)
        res = [r for r, _ in limits.resources(g[1], g[2])]
        if rest > 0 and per_user_got[g[0]] < per_user:
            # work-conserving: a group left waiting has a full limit (none: it got all)
            assert res and any(r in full for r in res), (g, rest)
    if limits.fair_share:
        _check_fair(inflight, waiting, got, limits, full, per_user_got, per_user)


def _check_fair(inflight, waiting, got, limits, full, per_user_got, per_user):
    """For a full destination site: a user v still waiting on it only (its other limits not
    full, its per-pass limit not reached) holds, after this pass, no less than any user u
    who got files there this pass, minus one."""
    level = defaultdict(int)
    gained = defaultdict(int)
    for g in set(inflight) | set(got):
        level[(g[0], g[2])] += inflight.get(g, 0) + got.get(g, 0)
        gained[(g[0], g[2])] += got.get(g, 0)
    for (v, src, dst), n in waiting.items():
        site = ("incoming", dst)
        if site not in full or n - got.get((v, src, dst), 0) <= 0 or per_user_got[v] >= per_user:
            continue
        others = [r for r, _ in limits.resources(src, dst) if r != site]
        if any(r in full for r in others):
            continue
        for u in USERS:
            if gained[(u, dst)] > 0:
                assert level[(u, dst)] <= level[(v, dst)] + 1, (u, v, dst)


@settings(max_examples=200, deadline=None)
@given(inflight=counts, waiting=counts, limits=limit_sets)
def test_groups_touching_no_limit_get_everything(inflight, waiting, limits):
    got = allocate(inflight, waiting, limits, 10**9)
    for g, n in waiting.items():
        if n and not limits.resources(g[1], g[2]):
            assert got.get(g, 0) == n


@settings(max_examples=200, deadline=None)
@given(inflight=counts, waiting=counts, limits=limit_sets)
def test_explain_accounts_for_every_row_a_pass_would_not_take(inflight, waiting, limits):
    got = allocate(inflight, waiting, limits, 10**9)
    entries = explain(inflight, waiting, limits)
    assert sum(e["waiting"] for e in entries) == sum(waiting.values()) - sum(got.values())
    assert all(e["waiting"] > 0 for e in entries)
