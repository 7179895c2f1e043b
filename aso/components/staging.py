"""Tape sites: which FTS jobs are staged (bring-online), and how stage-in requests become
FTS jobs (docs/staging.md).

Rucio's rules, as its submitter and stager apply them:

- a job whose source (a multi-hop path's first hop's source) is a tape site carries
  ``bring_online`` and the transfers' ``copy_pin_lifetime``; a job from disk carries neither;
- a tape site is never an intermediate site (the configuration refuses a tape site
  ``available_for_multihop``), so only the first hop can be staged;
- a stage-in request (``tm_type = 'stagein'``) names one tape site as source and destination
  and one LFN: its job is *staging only*, the same URL as source and destination, with
  ``bring_online`` and the stage-in ``copy_pin_lifetime`` (Rucio's stager: none by default).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aso.components.handoffs import Chunk
from aso.errors import AsoError, ConfigError
from aso.transfertools import Transfer

if TYPE_CHECKING:
    from aso.components.transfer import Plan
    from aso.config import Site
    from aso.topology import Topology

#: ``tm_type`` of a stage-in request (the others are 'output' and 'log')
STAGEIN = "stagein"
#: what a pass acquires: ordinary transfers (aso transfer) or stage-ins (aso stager)
TRANSFER_KIND, STAGEIN_KIND = "transfer", "stagein"


@dataclass(frozen=True)
class StagingSettings:
    """``[staging]``: seconds (0 or less: the parameter is not sent)."""

    bring_online: int = 43200
    copy_pin_lifetime: int = 172800
    stagein_pin_lifetime: int = -1

    @classmethod
    def from_config(cls, config) -> StagingSettings:
        s = config.staging
        return cls(s.bring_online, s.copy_pin_lifetime, s.stagein_pin_lifetime)

    def for_source(self, site: Site) -> tuple[int, int]:
        """(bring_online, copy_pin_lifetime) of a job whose first hop leaves ``site``:
        Rucio's submitter values from a tape site, (0, 0) (nothing sent) from disk."""
        if site.tape:
            return self.bring_online, self.copy_pin_lifetime
        return 0, 0

    def for_stagein(self) -> tuple[int, int]:
        """(bring_online, copy_pin_lifetime) of a stage-in job (Rucio's stager)."""
        return self.bring_online, self.stagein_pin_lifetime


def stagein_problem(row: dict, site: Site) -> str | None:
    """Why a stage-in row cannot be staged at ``site`` (its source), or None. The state
    server checked the rest at injection (same site, same LFN, nothing to publish); it
    does not know which sites are tape, so this is checked when the row is submitted."""
    if not site.tape:
        return (f"STAGEIN: site {site.name} is not a tape site (tape = false in [sites.{site.name}]): "
                "nothing to stage")
    if row["tm_destination"] != row["tm_source"] or row["tm_destination_lfn"] != row["tm_source_lfn"]:
        return "STAGEIN: a stage-in names the same site and LFN as source and destination"
    return None


def plan_stageins(rows: Iterable[dict], topology: Topology, max_files_per_job: int, staging: StagingSettings,
                  new_sid: Callable[[], str] = lambda: uuid.uuid4().hex) -> Plan:
    """Stage-in rows cut into staging-only chunks: grouped per site and endpoint (the
    site's own FTS), at most ``max_files_per_job`` each, every file's source and destination
    the site's URL of its LFN. Rows of a site that is not tape go to ``plan.bad`` (failed
    with the reason); rows of a site this configuration lacks to ``plan.unconfigured``."""
    from aso.components.transfer import Plan

    plan = Plan()
    bring_online, pin = staging.for_stagein()
    by_site: dict[tuple[str, str], list[Transfer]] = defaultdict(list)
    for row in rows:
        try:
            site = topology.site(row["tm_source"])
            problem = stagein_problem(row, site)
            if problem is not None:
                plan.bad.append((row, problem))
                continue
            url = site.pfn(row["tm_source_lfn"])
            endpoint = topology.route(site.name, site.name).endpoint
        except ConfigError as exc:
            plan.unconfigured.append((row["tm_id"], str(exc)))
            continue
        except AsoError as exc:  # an LFN that cannot become a URL at its site
            plan.bad.append((row, str(exc)))
            continue
        by_site[(site.name, endpoint)].append(Transfer(
            id=row["tm_id"], source=url, destination=url, filesize=row.get("tm_filesize"),
            checksum=row.get("tm_checksum") or None,
            metadata={"taskname": row["tm_taskname"], "src_site": site.name, "dst_site": site.name}))
    plan.chunks = [
        Chunk(new_sid(), endpoint, transfers[i:i + max_files_per_job], "", bring_online, pin)
        for (_, endpoint), transfers in sorted(by_site.items())
        for i in range(0, len(transfers), max_files_per_job)
    ]
    return plan
