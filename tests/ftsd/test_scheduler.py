"""Scheduler plug-ins on their own: order, limits, and a full link not blocking others."""

from __future__ import annotations

from collections import Counter

import pytest

from aso.ftsd.db import QueuedFile
from aso.ftsd.scheduler import GlobalLimit, PerLinkLimit, Running, Scheduler, default_scheduler

A = ("http://a", "file://")
B = ("http://b", "file://")


def q(file_id: int, link=A, priority: int = 3, submit_time: float = 0.0) -> QueuedFile:
    return QueuedFile(file_id, f"job{file_id}", link[0], link[1], priority, submit_time, 0)


def test_priority_first_then_submission_order():
    queued = [q(1, priority=1, submit_time=1), q(2, priority=3, submit_time=3), q(3, priority=5, submit_time=5),
              q(4, priority=3, submit_time=2), q(5, priority=3, submit_time=2)]
    chosen = Scheduler([GlobalLimit(10)]).select(queued, Running())
    assert [c.file_id for c in chosen] == [3, 4, 5, 2, 1]


def test_global_limit_counts_what_runs_already():
    chosen = Scheduler([GlobalLimit(3)]).select([q(i) for i in range(10)], Running.of([A]))
    assert [c.file_id for c in chosen] == [0, 1]


def test_a_full_link_does_not_block_the_next():
    queued = [q(1, A), q(2, A), q(3, A), q(4, B), q(5, B)]
    chosen = default_scheduler(max_active=10, max_per_link=2).select(queued, Running.of([A]))
    assert [c.file_id for c in chosen] == [1, 4, 5]


def test_per_link_overrides():
    limit = PerLinkLimit(1, overrides={B: 3})
    chosen = Scheduler([limit]).select([q(1, A), q(2, A), q(3, B), q(4, B), q(5, B), q(6, B)], Running())
    assert [c.file_id for c in chosen] == [1, 3, 4, 5]
    assert "1 overrides" in limit.describe()


def test_select_does_not_change_the_callers_counts():
    running = Running.of([A, A])
    Scheduler([GlobalLimit(5)]).select([q(1), q(2)], running)
    assert running.total == 2 and running.per_link == Counter({A: 2})


@pytest.mark.parametrize("bad", [0, -1])
def test_limits_must_allow_something(bad):
    with pytest.raises(ValueError):
        GlobalLimit(bad)
    with pytest.raises(ValueError):
        PerLinkLimit(bad)


def test_copy_slots_fit_the_machine_unless_given():
    from aso.ftsd.service import copy_slots

    assert copy_slots(cores=1) == (4, 4)
    assert copy_slots(cores=2) == (8, 8)
    assert copy_slots(cores=64) == (32, 32)
    assert copy_slots(6, 0, cores=2) == (6, 6)
    assert copy_slots(6, 2, cores=2) == (6, 2)
    assert copy_slots(0, 3, cores=2) == (8, 3)
