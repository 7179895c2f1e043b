"""At most N copies at once per link (source storage → destination storage), with
optional per-link overrides, like FTS3's link configuration."""

from __future__ import annotations

from collections.abc import Mapping

from aso.ftsd.db import QueuedFile
from aso.ftsd.scheduler.base import Limit, Running


class PerLinkLimit(Limit):
    name = "per-link"

    def __init__(self, max_per_link: int, overrides: Mapping[tuple[str, str], int] | None = None):
        if max_per_link < 1:
            raise ValueError("the per-link limit must be at least 1")
        self.max_per_link = max_per_link
        self.overrides = dict(overrides or {})

    def limit_for(self, link: tuple[str, str]) -> int:
        return self.overrides.get(link, self.max_per_link)

    def allows(self, candidate: QueuedFile, running: Running) -> bool:
        return running.per_link[candidate.link] < self.limit_for(candidate.link)

    def describe(self) -> str:
        return f"per link ≤ {self.max_per_link}" + (f" ({len(self.overrides)} overrides)" if self.overrides else "")
