"""The scheduler: which queued files start now.

Candidates arrive best first (priority, then submission time: FIFO within a priority).
Each limit plug-in may refuse a candidate given what is already running; the scheduler
takes, in order, every candidate that all limits allow, until the free slots are used.
A refused candidate does not block the ones behind it, so one saturated link never
starves the others.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from aso.ftsd.db import QueuedFile


@dataclass
class Running:
    """Copies in progress: how many in total and per link (source SE → destination SE)."""

    total: int = 0
    per_link: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, links: Iterable[tuple[str, str]]) -> Running:
        per_link = Counter(links)
        return cls(sum(per_link.values()), per_link)

    def add(self, link: tuple[str, str]) -> None:
        self.total += 1
        self.per_link[link] += 1


class Limit(ABC):
    """One scheduling rule."""

    name: str = "limit"

    @abstractmethod
    def allows(self, candidate: QueuedFile, running: Running) -> bool:
        """Whether ``candidate`` may start with ``running`` already going."""

    def describe(self) -> str:
        return self.name


def order_key(candidate: QueuedFile) -> tuple:
    return (-candidate.priority, candidate.submit_time, candidate.file_id)


class Scheduler:
    def __init__(self, limits: Sequence[Limit]):
        self.limits = list(limits)

    def select(self, candidates: Iterable[QueuedFile], running: Running) -> list[QueuedFile]:
        """The candidates to start now, in the order they should start."""
        running = Running(running.total, Counter(running.per_link))
        chosen: list[QueuedFile] = []
        for candidate in sorted(candidates, key=order_key):
            if all(limit.allows(candidate, running) for limit in self.limits):
                chosen.append(candidate)
                running.add(candidate.link)
        return chosen

    def describe(self) -> str:
        return ", ".join(limit.describe() for limit in self.limits)
