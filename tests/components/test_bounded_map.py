"""bounded_map: a pass's users through a thread pool, a few at a time, results in order."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from aso.components.pipeline import bounded_map


def test_results_in_order_with_at_most_window_outstanding():
    lock = threading.Lock()
    started, consumed, most = [0], [0], [0]

    def work(i: int) -> int:
        with lock:
            started[0] += 1
            most[0] = max(most[0], started[0] - consumed[0])
        time.sleep(0.002 * (i % 3))  # finish out of order
        return i * i

    with ThreadPoolExecutor(max_workers=4) as pool:
        out = []
        for r in bounded_map(pool, work, range(50), window=5):
            out.append(r)
            with lock:
                consumed[0] += 1
    assert out == [i * i for i in range(50)]
    assert most[0] <= 5


def test_an_error_reaches_the_caller():
    def work(i: int) -> int:
        if i == 3:
            raise ValueError("user 3")
        return i

    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(ValueError, match="user 3"):
        list(bounded_map(pool, work, range(10), window=2))
