"""GroupCommit: many threads' items applied together, failures kept to their owner."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aso.components.pipeline import GroupCommit
from aso.errors import BackendUnavailable, ValidationError


def test_items_queued_together_are_applied_in_one_call():
    calls: list[list[int]] = []
    gate, entered = threading.Event(), threading.Event()
    calls_in_flight: list[int] = []

    def apply(items):
        calls_in_flight.append(len(items))
        entered.set()
        gate.wait(30)  # hold the first call so the other threads' items pile up behind it
        calls.append(list(items))
        return sum(items)

    group = GroupCommit(apply)
    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(group.commit, i) for i in range(1, 9)]
        assert entered.wait(30)  # the first group is being applied...
        deadline = time.monotonic() + 30
        while calls_in_flight[0] + group._queue.qsize() < 8:  # ...and every other item waits behind it
            assert time.monotonic() < deadline, "the items never queued up"
            time.sleep(0.01)
        gate.set()
        outcomes = [f.result() for f in futures]
    group.close()
    assert sorted(i for call in calls for i in call) == list(range(1, 9))
    assert len(calls) <= 2  # the first group, then everything that queued meanwhile, in one call
    for call in calls:  # each caller got what its group's call returned
        assert all(outcomes[i - 1] == sum(call) for i in call)


def test_a_bad_item_fails_alone():
    applied: list[int] = []

    def apply(items):
        if 13 in items:
            raise ValidationError("item", "13 is refused")
        applied.extend(items)
        return len(items)

    group = GroupCommit(apply)
    results: dict[int, object] = {}
    gate = threading.Barrier(4)

    def worker(i):
        gate.wait()
        try:
            results[i] = group.commit(i)
        except ValidationError as exc:
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in (11, 12, 13, 14)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    group.close()
    assert isinstance(results[13], ValidationError)
    assert sorted(applied) == [11, 12, 14]
    assert all(isinstance(results[i], int) for i in (11, 12, 14))


def test_backend_down_fails_every_item_of_the_group_without_retrying_each():
    calls = []

    def apply(items):
        calls.append(list(items))
        raise BackendUnavailable("state server: connection refused")

    group = GroupCommit(apply, size=len)
    with pytest.raises(BackendUnavailable):
        group.commit([1, 2])
    group.close()
    assert calls == [[[1, 2]]]
