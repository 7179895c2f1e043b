"""Scheduler plug-ins of the embedded FTS service (one module per limit)."""

from __future__ import annotations

from aso.ftsd.scheduler.base import Limit, Running, Scheduler, order_key
from aso.ftsd.scheduler.global_limit import GlobalLimit
from aso.ftsd.scheduler.per_link import PerLinkLimit


def default_scheduler(max_active: int, max_per_link: int) -> Scheduler:
    return Scheduler([GlobalLimit(max_active), PerLinkLimit(max_per_link)])


__all__ = ["GlobalLimit", "Limit", "PerLinkLimit", "Running", "Scheduler", "default_scheduler", "order_key"]
