"""Path selection: the cheapest way from a source site to a destination site.

Rucio's rule (``core/topology.py``): the cost of a path is the sum of its links'
distances plus a hop penalty for every intermediate site (the site's own ``hop_penalty``,
else the global one); only sites ``available_for_multihop`` may be intermediate; the
lowest cost wins, and on equal cost the path with fewer hops (a direct link first). Ties
beyond that go to the path whose site names sort first, so the choice never depends on
the order links were configured in.

Dijkstra over the label ``(cost, hops, sites)``: every edge adds a non-negative cost and
exactly one hop, so labels only grow along a path and the first label settled at a site
is the least one (a tuple of equal-length site lists keeps its order when both are
extended by the same site).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from itertools import pairwise

from aso.errors import AsoError


class NoPathError(AsoError):
    """No direct link and no multi-hop path joins two sites."""

    def __init__(self, source: str, destination: str, why: str = ""):
        self.source = source
        self.destination = destination
        detail = f" ({why})" if why else ""
        super().__init__(f"NO_PATH: no link or multi-hop path from {source} to {destination}{detail}")


@dataclass(frozen=True)
class Edge:
    """A link as path selection sees it: who it joins and what it costs."""

    source: str
    destination: str
    distance: int


@dataclass(frozen=True)
class ChosenPath:
    """The sites a file passes, in order, and what the path cost."""

    sites: tuple[str, ...]
    cost: int

    @property
    def hops(self) -> int:
        return len(self.sites) - 1

    @property
    def is_multihop(self) -> bool:
        return self.hops > 1

    def text(self) -> str:
        """``A>B>C``: how a row records its path (site names never contain ``>``)."""
        return ">".join(self.sites)

    def pairs(self) -> list[tuple[str, str]]:
        return list(pairwise(self.sites))


def shortest_path(
    source: str,
    destination: str,
    edges: Mapping[str, Iterable[Edge]],
    penalty: Mapping[str, int],
    hop_sites: Iterable[str] | set[str] | frozenset[str],
    max_hops: int = 0,
) -> ChosenPath:
    """The path Rucio's rule picks from ``source`` to ``destination``.

    ``edges``: each site's outgoing links; ``penalty``: the hop penalty of each site when it
    is intermediate; ``hop_sites``: the sites allowed to be intermediate; ``max_hops``: most
    links on a path (0 = no limit). Raises :class:`NoPathError`."""
    if source == destination:
        raise NoPathError(source, destination, "source and destination are the same site")
    hop_sites = hop_sites if isinstance(hop_sites, (set, frozenset)) else set(hop_sites)
    # With a hop limit a site reached cheaply over many hops must not hide a dearer way
    # to it over fewer, so a label is settled per (site, hops) then.
    settled: set[object] = set()
    heap: list[tuple[int, int, tuple[str, ...]]] = [(0, 0, (source,))]
    while heap:
        cost, hops, sites = heapq.heappop(heap)
        here = sites[-1]
        key = (here, hops) if max_hops else here
        if key in settled:
            continue
        settled.add(key)
        if here == destination:
            return ChosenPath(sites, cost)
        if here != source and here not in hop_sites:
            continue  # it may end a path, never be passed through
        if max_hops and hops >= max_hops:
            continue
        extra = penalty.get(here, 0) if here != source else 0
        for edge in edges.get(here, ()):
            if edge.destination not in sites:
                heapq.heappush(heap, (cost + extra + edge.distance, hops + 1, sites + (edge.destination,)))
    raise NoPathError(source, destination)
