"""The topology of one configuration: sites, the links between them, and the chosen paths.

A link is an ordered site pair with a distance, the transfer tool and endpoint that serve
it, and a limit on the files in flight over it. Links come from ``[[links]]``; a pair no
entry names is a direct link of ``[topology] default_distance`` (0: no link), so a
configuration written before links existed keeps one direct link between every pair.
"""

from __future__ import annotations

import posixpath
import threading
from dataclasses import dataclass, field
from itertools import pairwise
from typing import TYPE_CHECKING

from aso import validate
from aso.errors import ConfigError, ValidationError
from aso.topology.paths import ChosenPath, Edge, NoPathError, shortest_path
from aso.transfertools import endpoint_for

if TYPE_CHECKING:
    from aso.config import Config, Site


@dataclass(frozen=True)
class Link:
    source: str
    destination: str
    distance: int
    #: the endpoint of the transfer tool serving the link
    endpoint: str
    transfertool: str = "fts3"
    #: most files in flight over the link (0: no limit)
    max_files: int = 0
    #: from [[links]] (False: implied by [topology] default_distance)
    configured: bool = True

    def as_dict(self) -> dict:
        return {"source": self.source, "destination": self.destination, "distance": self.distance,
                "endpoint": self.endpoint, "transfertool": self.transfertool, "max_files": self.max_files,
                "configured": self.configured}


@dataclass(frozen=True)
class Route:
    """A chosen path with the links it takes and where it is submitted."""

    path: ChosenPath
    links: tuple[Link, ...]

    @property
    def is_multihop(self) -> bool:
        return self.path.is_multihop

    @property
    def endpoint(self) -> str:
        """Where the whole path goes as one job: the first link's endpoint (the service
        that starts the first copy runs the hops after it too, as FTS3 does)."""
        return self.links[0].endpoint

    @property
    def transfertool(self) -> str:
        return self.links[0].transfertool

    def as_dict(self) -> dict:
        return {"path": list(self.path.sites), "text": self.path.text(), "cost": self.path.cost,
                "hops": self.path.hops, "multihop": self.is_multihop, "endpoint": self.endpoint,
                "transfertool": self.transfertool, "links": [link.as_dict() for link in self.links]}


@dataclass
class Topology:
    sites: dict[str, Site]
    links: dict[tuple[str, str], Link]
    hop_penalty: int = 10
    max_hops: int = 3
    scratch: str = "/store/temp/aso/multihop"
    fair_share: bool = True
    #: chosen routes, once per site pair for the life of the object (one pass)
    _routes: dict[tuple[str, str], Route | NoPathError] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _graph_cache: tuple | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, config: Config) -> Topology:
        t = config.values["topology"]
        scratch = t["scratch"]
        try:
            validate.lfn(scratch, "topology.scratch")
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
        links: dict[tuple[str, str], Link] = {}
        for spec in config.links:
            if spec.transfertool == "globus":
                # the endpoint alone tells every component which tool serves a job
                endpoint = endpoint_for("globus", config.values["globus"]["transfer_url"])
            else:
                endpoint = spec.fts or config.sites[spec.destination].fts
            links[(spec.source, spec.destination)] = Link(spec.source, spec.destination, spec.distance, endpoint,
                                                          spec.transfertool, spec.max_files)
        default = t["default_distance"]
        if default:
            for a in config.sites:
                for b, site in config.sites.items():
                    if a != b and (a, b) not in links:
                        # FTS is chosen by the destination, as Rucio does by default
                        links[(a, b)] = Link(a, b, default, site.fts, configured=False)
        return cls(dict(config.sites), links, t["hop_penalty"], t["max_hops"], scratch, t["fair_share"])

    def as_dict(self) -> dict:
        """Sites (with their multi-hop flag, hop penalty and limits), links and the path
        rule's settings: what ``aso topology`` shows."""
        sites = [{"name": name, "prefix": site.prefix, "fts": site.fts,
                  "available_for_multihop": site.available_for_multihop, "hop_penalty": self.penalty(name),
                  "scratch": site.scratch or self.scratch, "max_incoming": site.max_incoming,
                  "max_outgoing": site.max_outgoing, "tape": site.tape}
                 for name, site in sorted(self.sites.items())]
        return {"hop_penalty": self.hop_penalty, "max_hops": self.max_hops, "scratch": self.scratch,
                "sites": sites, "links": [self.links[pair].as_dict() for pair in sorted(self.links)]}

    def site(self, name: str) -> Site:
        try:
            return self.sites[name]
        except KeyError:
            raise ConfigError(f"sites.{name}: no such site in the configuration") from None

    def penalty(self, name: str) -> int:
        own = self.sites[name].hop_penalty
        return self.hop_penalty if own is None else own

    def route(self, source: str, destination: str) -> Route:
        """The route Rucio's rule chooses, computed once per pair; :class:`NoPathError` when
        none exists, and ConfigError when a site is not configured at all."""
        key = (source, destination)
        found = self._routes.get(key)
        if found is None:
            self.site(source)
            self.site(destination)
            found = self._choose(source, destination)
            with self._lock:
                self._routes[key] = found
        if isinstance(found, NoPathError):
            raise found
        return found

    def _graph(self) -> tuple[dict[str, list[Edge]], dict[str, int], set[str]]:
        """Outgoing edges, hop penalties and multi-hop sites: built once per topology (per
        pass), not once per site pair."""
        if self._graph_cache is None:
            edges: dict[str, list[Edge]] = {}
            for (a, b), link in self.links.items():
                if link.transfertool == "globus":
                    continue  # Globus cannot chain copies: its links are direct paths only (_choose)
                edges.setdefault(a, []).append(Edge(a, b, link.distance))
            penalties = {name: self.penalty(name) for name in self.sites}
            hop_sites = {name for name, s in self.sites.items() if s.available_for_multihop}
            self._graph_cache = (edges, penalties, hop_sites)
        return self._graph_cache

    def _choose(self, source: str, destination: str) -> Route | NoPathError:
        if source == destination:
            # from a user's temporary area to their final one at the same site: one copy
            # within the site, by the site's own FTS (as before links existed); not a link
            site = self.sites[source]
            return Route(ChosenPath((source, destination), 0), (Link(source, destination, 0, site.fts, configured=False),))
        edges, penalties, hop_sites = self._graph()
        direct = self.links.get((source, destination))
        try:
            path = shortest_path(source, destination, edges, penalties, hop_sites, self.max_hops)
        except NoPathError as exc:
            if direct is None or direct.transfertool != "globus":
                return exc
            path = None
        if direct is not None and direct.transfertool == "globus" and (path is None or direct.distance <= path.cost):
            # the same rule: the lower cost wins, a direct link on equal cost
            return Route(ChosenPath((source, destination), direct.distance), (direct,))
        return Route(path, tuple(self.links[pair] for pair in path.pairs()))

    def scratch_lfn(self, site: str, row_id: str, destination_lfn: str) -> str:
        """Where a multi-hop path's copy of a file waits at intermediate ``site``: the same
        name for every attempt of the row, so a retry finds a copy an earlier attempt made."""
        folder = self.sites[site].scratch or self.scratch
        name = posixpath.basename(destination_lfn)
        return validate.lfn(f"{folder.rstrip('/')}/{validate.row_id(row_id)}/{name}", "scratch")

    def hop_urls(self, route: Route, row_id: str, source_lfn: str, destination_lfn: str) -> list[tuple[str, str]]:
        """(source URL, destination URL) of every hop of ``route`` for one file."""
        sites = route.path.sites
        urls = [self.sites[sites[0]].pfn(source_lfn)]
        for middle in sites[1:-1]:
            urls.append(self.sites[middle].pfn(self.scratch_lfn(middle, row_id, destination_lfn)))
        urls.append(self.sites[sites[-1]].pfn(destination_lfn))
        return list(pairwise(urls))
