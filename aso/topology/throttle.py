"""Throttling at acquisition: how many NEW rows of each (user, source, destination) group a
pass may take so that no site or link holds more files in flight than its limit.

A row waits in NEW while its destination site (``max_incoming``), its source site
(``max_outgoing``) or its link (``max_files``) is full, so nothing waits in FTS's queue
that could have waited in ours. Files in flight are rows ACQUIRED or SUBMITTED, counted
over every worker. With ``fair_share`` a full site or link is shared max-min fairly
between the users waiting for it, counting what each already has in flight: a user who
holds the site does not take freed capacity while another user waits.

Everything here is pure (counts in, counts out); the store counts and applies it in one
transaction (:meth:`aso.state.store.transfers.Transfers.acquire_transfers`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aso import validate
from aso.errors import ValidationError

if TYPE_CHECKING:
    from aso.topology.model import Topology

#: (user, source site, destination site)
Group = tuple[str, str, str]
Counts = Mapping[Group, int]
#: ("incoming", site) | ("outgoing", site) | ("link", (source, destination))
Resource = tuple[str, Any]

#: entries per list of a ThrottleLimits document (a configuration has far fewer)
MAX_ENTRIES = 100_000
_KINDS = ("incoming", "outgoing", "links")


@dataclass(frozen=True)
class ThrottleLimits:
    """The limits of one pass: most files in flight into a site, out of a site and over a
    link (only positive limits are kept: 0 means no limit), and whether a full one is
    shared fairly between users."""

    incoming: dict[str, int] = field(default_factory=dict)
    outgoing: dict[str, int] = field(default_factory=dict)
    links: dict[tuple[str, str], int] = field(default_factory=dict)
    fair_share: bool = True

    @classmethod
    def from_topology(cls, topology: Topology) -> ThrottleLimits:
        return cls(
            incoming={name: s.max_incoming for name, s in topology.sites.items() if s.max_incoming > 0},
            outgoing={name: s.max_outgoing for name, s in topology.sites.items() if s.max_outgoing > 0},
            links={pair: link.max_files for pair, link in topology.links.items() if link.max_files > 0},
            fair_share=topology.fair_share,
        )

    def is_empty(self) -> bool:
        return not (self.incoming or self.outgoing or self.links)

    def resources(self, source: str, destination: str) -> tuple[tuple[Resource, int], ...]:
        """The limited resources a row from ``source`` to ``destination`` uses, with their
        maxima; the destination first (the one fairness is reckoned on when limited)."""
        found: list[tuple[Resource, int]] = []
        if (n := self.incoming.get(destination, 0)) > 0:
            found.append((("incoming", destination), n))
        if (n := self.links.get((source, destination), 0)) > 0:
            found.append((("link", (source, destination)), n))
        if (n := self.outgoing.get(source, 0)) > 0:
            found.append((("outgoing", source), n))
        return tuple(found)

    def to_json(self) -> dict[str, Any]:
        return {
            "incoming": [{"site": s, "max_files": n} for s, n in sorted(self.incoming.items())],
            "outgoing": [{"site": s, "max_files": n} for s, n in sorted(self.outgoing.items())],
            "links": [{"source": a, "destination": b, "max_files": n} for (a, b), n in sorted(self.links.items())],
            "fair_share": self.fair_share,
        }

    @classmethod
    def from_json(cls, value: Any, field: str = "limits") -> ThrottleLimits:
        """Limits from :meth:`to_json`'s document; ValidationError naming the bad field."""
        if not isinstance(value, dict):
            raise ValidationError(field, "expected an object with incoming, outgoing, links and fair_share")
        unknown = sorted(set(value) - {*_KINDS, "fair_share"})
        if unknown:
            raise ValidationError(f"{field}.{unknown[0]}", "unknown key (known: incoming, outgoing, links, fair_share)")
        fair = value.get("fair_share", True)
        if not isinstance(fair, bool):
            raise ValidationError(f"{field}.fair_share", "expected true or false")
        sites: dict[str, dict[str, int]] = {}
        for kind in ("incoming", "outgoing"):
            sites[kind] = {}
            for where, entry in _entries(value.get(kind, []), f"{field}.{kind}", ("site", "max_files")):
                name = validate.site(entry.get("site"), f"{where}.site")
                if name in sites[kind]:
                    raise ValidationError(f"{where}.site", f"{name} is listed twice")
                sites[kind][name] = _max_files(entry, where)
        links: dict[tuple[str, str], int] = {}
        for where, entry in _entries(value.get("links", []), f"{field}.links", ("source", "destination", "max_files")):
            pair = (validate.site(entry.get("source"), f"{where}.source"),
                    validate.site(entry.get("destination"), f"{where}.destination"))
            if pair in links:
                raise ValidationError(f"{where}", f"link {pair[0]} -> {pair[1]} is listed twice")
            links[pair] = _max_files(entry, where)
        return cls({k: n for k, n in sites["incoming"].items() if n},
                   {k: n for k, n in sites["outgoing"].items() if n},
                   {k: n for k, n in links.items() if n}, fair)


def _entries(value: Any, field: str, keys: tuple[str, ...]) -> Iterable[tuple[str, dict]]:
    if not isinstance(value, list):
        raise ValidationError(field, "expected a list")
    if len(value) > MAX_ENTRIES:
        raise ValidationError(field, f"{len(value)} entries; at most {MAX_ENTRIES}")
    for i, entry in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict):
            raise ValidationError(where, "expected an object")
        unknown = sorted(set(entry) - set(keys))
        if unknown:
            raise ValidationError(f"{where}.{unknown[0]}", f"unknown key (known: {', '.join(keys)})")
        yield where, entry


def _max_files(entry: dict, where: str) -> int:
    value = entry.get("max_files")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValidationError(f"{where}.max_files", "expected a whole number (0 = no limit)")
    return validate.non_negative_int(value, f"{where}.max_files")


@dataclass(frozen=True)
class ThrottleCounts:
    """Rows per (user, source, destination): in flight (ACQUIRED or SUBMITTED, any worker)
    and waiting (NEW, any worker)."""

    inflight: dict[Group, int] = field(default_factory=dict)
    waiting: dict[Group, int] = field(default_factory=dict)


# -- allocation ------------------------------------------------------------------------------
def _used(inflight: Counts, limits: ThrottleLimits) -> tuple[dict[Resource, int], dict[tuple[str, Resource], int]]:
    """Files in flight per limited resource, and per (user, resource)."""
    used: dict[Resource, int] = defaultdict(int)
    per_user: dict[tuple[str, Resource], int] = defaultdict(int)
    cache: dict[tuple[str, str], tuple] = {}
    for (user, src, dst), n in inflight.items():
        res = cache.get((src, dst))
        if res is None:
            res = cache[(src, dst)] = limits.resources(src, dst)
        for r, _max in res:
            used[r] += n
            per_user[(user, r)] += n
    return used, per_user


def allocate(inflight: Counts, waiting: Counts, limits: ThrottleLimits, per_user_limit: int,
             oldest: Mapping[Group, int] | None = None) -> dict[Group, int]:
    """How many of each group's waiting rows this pass takes.

    - Never more than a limit allows counting what is in flight, a group's waiting rows,
      or ``per_user_limit`` rows per user (the per-pass acquire limit).
    - Work-conserving: a group left with waiting rows has a full site or link, or its user
      reached ``per_user_limit``.
    - Groups under a limit are served first (their capacity is what is scarce); groups under
      none then take what they ask, up to the user's per-pass limit, without per-file work.
    - With ``fair_share``, max-min fair per key resource (a group's destination site if
      limited, else its link, else its source site), counting each user's files in flight
      there: if a user still waits on a full site only, no user who got files there this
      pass holds more than one file beyond that user. Without it, groups go oldest first
      (``oldest``: creation time of each group's oldest waiting row; else in key order).
    """
    per_user_limit = max(0, per_user_limit)
    budget: dict[str, int] = defaultdict(lambda: per_user_limit)
    alloc: dict[Group, int] = {}
    order = (lambda g: (oldest.get(g, 0), g)) if oldest else (lambda g: g)
    #: remaining waiting rows of each group under a limit, and the resources it uses
    left: dict[Group, int] = {}
    uses: dict[Group, tuple[Resource, ...]] = {}
    free: list[Group] = []
    cache: dict[tuple[str, str], tuple[Resource, ...]] = {}
    maxima: dict[Resource, int] = {}
    for g, n in waiting.items():
        if n <= 0:
            continue
        pair = (g[1], g[2])
        res = cache.get(pair)
        if res is None:
            found = limits.resources(*pair)
            maxima.update(found)
            res = cache[pair] = tuple(r for r, _ in found)
        if res:
            left[g] = n
            uses[g] = res
        else:
            free.append(g)
    if left:
        used, per_user = _used(inflight, limits)
        capacity = {r: max(0, most - used.get(r, 0)) for r, most in maxima.items()}
        if limits.fair_share:
            _fair(left, uses, capacity, budget, per_user, alloc, order)
        else:
            for g in sorted(left, key=order):
                res = uses[g]
                k = min(left[g], budget[g[0]], *[capacity[r] for r in res])
                if k > 0:
                    alloc[g] = k
                    budget[g[0]] -= k
                    for r in res:
                        capacity[r] -= k
    for g in sorted(free, key=order):
        k = min(waiting[g], budget[g[0]])
        if k > 0:
            alloc[g] = k
            budget[g[0]] -= k
    return alloc


def _fair(left: dict[Group, int], uses: dict[Group, tuple[Resource, ...]], capacity: dict[Resource, int],
          budget: dict[str, int], per_user: dict[tuple[str, Resource], int], alloc: dict[Group, int], order) -> None:
    """Water-filling, one key resource at a time (destination sites, then links, then
    source sites: a later kind's levels then include what the earlier ones took through
    it)."""
    keyed: dict[Resource, dict[str, list[Group]]] = defaultdict(lambda: defaultdict(list))
    for g, res in uses.items():
        keyed[res[0]][g[0]].append(g)
    rank = {"incoming": 0, "link": 1, "outgoing": 2}
    #: files per (user, resource): in flight, plus taken by this allocation through any group
    level = defaultdict(int, per_user)
    for key in sorted(keyed, key=lambda r: (rank[r[0]], str(r[1]))):
        buckets = keyed[key]
        for groups in buckets.values():
            groups.sort(key=order, reverse=True)  # a stack: the next group to serve last
        _fill(key, buckets, left, uses, capacity, budget, alloc, level, order)


def _fill(key: Resource, buckets: dict[str, list[Group]], left: dict[Group, int], uses: dict[Group, tuple],
          capacity: dict[Resource, int], budget: dict[str, int], alloc: dict[Group, int],
          level: dict[tuple[str, Resource], int], order) -> None:
    """Share the free capacity of ``key`` between users (their groups keyed on it): find
    the water level W such that raising every user to W (each by at most what it can
    take) fits; the files left over go one each to users at W, oldest first. A user whose
    other limits stop it short leaves, and what it did not take is shared again."""
    active = dict(buckets)
    while active and capacity[key] > 0:
        free = capacity[key]
        rooms: dict[str, int] = {}
        for user, groups in active.items():
            room = min(budget[user], sum([left[g] for g in groups]))
            if room > 0:
                rooms[user] = room
        if not rooms:
            return
        levels = {user: level[(user, key)] for user in rooms}
        water = water_level([(levels[u], room) for u, room in rooms.items()], free)
        shares = {u: min(max(water - levels[u], 0), room) for u, room in rooms.items()}
        extra = free - sum(shares.values())
        if extra > 0:
            at_water = sorted((order(active[u][-1]), u) for u in rooms
                              if levels[u] + shares[u] == water and shares[u] < rooms[u])
            for _, u in at_water[:extra]:
                shares[u] += 1
        short = False
        for user, share in shares.items():
            if share > 0 and _give(user, active[user], share, left, uses, capacity, budget, alloc, level) < share:
                short = True
                del active[user]  # its other limits are full (for good, this pass)
            elif not active[user]:
                del active[user]
        if not short:
            return  # everyone took its share: the capacity or the demand is used up


def _filled(pairs: list[tuple[int, int]], w: int) -> int:
    return sum([min(w - lvl, room) for lvl, room in pairs if w > lvl])


def water_level(pairs: list[tuple[int, int]], free: int) -> int:
    """The highest level W such that raising every (level, room) to W, each by at most its
    room, takes at most ``free`` files (W is at least the lowest level)."""
    top = max(lvl + room for lvl, room in pairs)
    if _filled(pairs, top) <= free:
        return top
    lo, hi = min(lvl for lvl, _ in pairs), top
    while hi - lo > 1:  # _filled(lo) <= free < _filled(hi)
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _filled(pairs, mid) <= free else (lo, mid)
    return lo


def _give(user: str, groups: list[Group], want: int, left: dict[Group, int], uses: dict[Group, tuple],
          capacity: dict[Resource, int], budget: dict[str, int], alloc: dict[Group, int],
          level: dict[tuple[str, Resource], int]) -> int:
    """Up to ``want`` files to one user's groups at a key resource, oldest group first;
    a group that is exhausted or whose other limits are full leaves ``groups`` for good."""
    given = 0
    while groups and given < want:
        g = groups[-1]
        res = uses[g]
        k = min(want - given, left[g], budget[user])
        for r in res:
            if capacity[r] < k:
                k = capacity[r]
        if k > 0:
            alloc[g] = alloc.get(g, 0) + k
            left[g] -= k
            budget[user] -= k
            for r in res:
                capacity[r] -= k
                level[(user, r)] += k
            given += k
        if given < want or k <= 0:
            groups.pop()
    if budget[user] <= 0:
        groups.clear()
    return given


# -- why rows wait ---------------------------------------------------------------------------
def _describe(r: Resource, most: int, in_flight: int, rows: int) -> dict[str, Any]:
    kind, where = r
    entry: dict[str, Any] = {"limit": kind}
    if kind == "link":
        entry.update(source=where[0], destination=where[1])
    else:
        entry["site"] = where
    entry.update({"max": most, "in_flight": in_flight, "waiting": rows})
    return entry


def held_back(inflight: Counts, waiting: Counts, alloc: Mapping[Group, int], limits: ThrottleLimits) -> dict[Resource, int]:
    """Rows left waiting after ``alloc`` because a site or link is full, per the strictest
    (smallest) full limit of each group; rows left only by a per-pass limit are not counted."""
    used, _ = _used(inflight, limits)
    cache: dict[tuple[str, str], tuple] = {}
    pending: list[tuple[int, tuple]] = []
    for g, n in waiting.items():
        rest = n - alloc.get(g, 0)
        if rest <= 0:
            continue
        res = cache.get(g[1:])
        if res is None:
            res = cache[g[1:]] = limits.resources(g[1], g[2])
        if res:
            pending.append((rest, res))
    for g, k in alloc.items():
        res = cache.get(g[1:])
        if res is None:
            res = cache[g[1:]] = limits.resources(g[1], g[2])
        for r, _ in res:
            used[r] += k
    out: dict[Resource, int] = defaultdict(int)
    for rest, res in pending:
        full = [(most, i, r) for i, (r, most) in enumerate(res) if used.get(r, 0) >= most]
        if full:
            out[min(full)[2]] += rest
    return dict(out)


def explain(inflight: Counts, waiting: Counts, limits: ThrottleLimits) -> list[dict[str, Any]]:
    """Which limit the waiting rows wait on: rows a pass would not take however high its
    per-user limit, each counted once under its group's strictest full limit. One entry per
    such limit, most rows first: {"limit": "incoming"|"outgoing"|"link", "site" (or
    "source" and "destination"), "max", "in_flight" (now, all users), "waiting"}."""
    alloc = allocate(inflight, waiting, limits, validate.MAX_INT)
    held = held_back(inflight, waiting, alloc, limits)
    used, _ = _used(inflight, limits)
    maxima = {("incoming", s): n for s, n in limits.incoming.items()}
    maxima.update({("outgoing", s): n for s, n in limits.outgoing.items()})
    maxima.update({("link", pair): n for pair, n in limits.links.items()})
    entries = [_describe(r, maxima[r], used.get(r, 0), n) for r, n in held.items()]
    return sorted(entries, key=lambda e: (-e["waiting"], e["limit"], str(e.get("site", "")), e.get("source", ""), e.get("destination", "")))
