"""Who may inject what: the LFN areas and tasks a caller's token confines it to.

CRAB only ever lets a user's jobs read from the user's own temporary area and write under
the user's own (or their group's) area. The state server applies the same rule to every
injected row, before anything is written:

- the **service** role (the job post-processing step, ASO itself) is not confined;
- an **operator** injects only where ``[server] operator_inject`` allows it, and then within
  the namespace of the user the row names;
- a **user** injects only rows of their own ``username``, whose source LFN lies in one of
  their source areas and whose destination LFN lies under one of their destination
  prefixes, into tasks that are theirs (a stage-in's one LFN only under a destination
  prefix: it stages a file the user already stores).

Every refusal is a :class:`~aso.errors.ForbiddenError` naming the field and the rule.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aso import validate
from aso.errors import ConfigError, ForbiddenError
from aso.state.auth import Identity

DEFAULT_SOURCE_AREAS = ("/store/temp/user/{username}",)
DEFAULT_DESTINATION_AREAS = ("/store/user/{username}/", "/store/group/{group}/")
#: CRAB's task names: ``YYMMDD_HHMMSS:<username>_<request name>``
CRAB_TASKNAME_RE = re.compile(r"^\d{6}_\d{6}:(?P<rest>.+)$")


@dataclass(frozen=True)
class Namespaces:
    source_areas: Sequence[str] = DEFAULT_SOURCE_AREAS
    destination_areas: Sequence[str] = DEFAULT_DESTINATION_AREAS
    #: user name -> the groups whose areas ``{group}`` expands to for that user
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)
    operator_inject: bool = False

    @classmethod
    def from_config(cls, server: Any) -> Namespaces:
        """From the ``[server]`` section (``source_areas``, ``destination_areas``, ``groups``,
        ``operator_inject``); a malformed entry is a ConfigError naming it."""
        for key in ("source_areas", "destination_areas"):
            for i, area in enumerate(getattr(server, key)):
                if not isinstance(area, str) or not area.startswith("/"):
                    raise ConfigError(f"server.{key}[{i}]: expected an LFN prefix starting with '/'")
                if "{group}" in area and key == "source_areas":
                    raise ConfigError(f"server.{key}[{i}]: {{group}} is only for destination_areas")
        groups: dict[str, tuple[str, ...]] = {}
        for user, names in server.groups.items():
            if not isinstance(names, list) or not all(isinstance(g, str) and validate.LFN_PART_RE.fullmatch(g) for g in names):
                raise ConfigError(f"server.groups.{user}: expected a list of group names ([A-Za-z0-9_.+-])")
            groups[user] = tuple(names)
        return cls(tuple(server.source_areas), tuple(server.destination_areas), groups, bool(server.operator_inject))

    # -- the rules -------------------------------------------------------------------------
    def sources_of(self, user: str) -> list[str]:
        return [a.format(username=user) for a in self.source_areas]

    def destinations_of(self, user: str) -> list[str]:
        out: list[str] = []
        for area in self.destination_areas:
            if "{group}" in area:
                out += [area.format(username=user, group=g) for g in self.groups.get(user, ())]
            else:
                out.append(area.format(username=user))
        return out

    def check_injection(self, who: Identity, index: int, row: Mapping[str, Any]) -> None:
        """Refuse a validated row (``tm_*`` columns) that ``who`` may not inject."""
        if who.role == "service":
            return
        where = f"[{index}]"
        user = row["tm_username"]
        if who.role == "operator" and not self.operator_inject:
            raise ForbiddenError(f"{where}: operators may not inject transfers (server.operator_inject is false)")
        if who.role == "user" and user != who.name:
            raise ForbiddenError(f"{where}.username: {who.name} may inject only its own transfers, not {user}'s")
        sources = self.sources_of(user)
        # A stage-in brings one of the user's own stored files online in place: its LFN (source
        # and destination alike) must lie under the user's destination areas, not in a temporary one.
        if row.get("tm_type") != "stagein" and not any(validate.lfn_under(row["tm_source_lfn"], a) for a in sources):
            raise ForbiddenError(f"{where}.source_lfn: must lie in {' or '.join(sources)} (followed by '/' or '.')")
        destinations = self.destinations_of(user)
        if not any(validate.lfn_under(row["tm_destination_lfn"], a) for a in destinations):
            raise ForbiddenError(f"{where}.destination_lfn: must lie under {' or '.join(destinations) or '(no area)'}")
        self.check_task_name(who, where, row["tm_taskname"], user)

    @staticmethod
    def check_task_name(who: Identity, where: str, taskname: str, user: str) -> None:
        """A CRAB-style task name carries its owner: nobody else may create or feed it."""
        if who.role == "service":
            return
        m = CRAB_TASKNAME_RE.match(taskname)
        if m and not m.group("rest").startswith(user + "_"):
            raise ForbiddenError(f"{where}.taskname: {taskname!r} is a CRAB task name of another user than {user}")
