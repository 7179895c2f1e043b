"""At most N copies at once over the whole service."""

from __future__ import annotations

from aso.ftsd.db import QueuedFile
from aso.ftsd.scheduler.base import Limit, Running


class GlobalLimit(Limit):
    name = "global"

    def __init__(self, max_active: int):
        if max_active < 1:
            raise ValueError("the global limit must be at least 1")
        self.max_active = max_active

    def allows(self, candidate: QueuedFile, running: Running) -> bool:
        return running.total < self.max_active

    def describe(self) -> str:
        return f"global ≤ {self.max_active}"
