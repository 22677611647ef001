"""Batches fetched ahead of the step: same order and content, fetched while the consumer works, errors
surface at their batch."""

import threading
import time

import pytest

from train.prefetch import prefetched


def test_prefetched_keeps_order_and_fetches_ahead():
    fetched_at = {}

    def fetch(s):
        fetched_at[s] = time.perf_counter()
        return s * 10

    out = []
    for batch in prefetched(fetch, range(3, 8), depth=2):
        out.append(batch)
        if batch == 30:
            time.sleep(0.05)  # the "step": batch 4 must already be fetched meanwhile
            assert 4 in fetched_at
    assert out == [30, 40, 50, 60, 70]


def test_prefetched_fetches_off_the_calling_thread():
    threads = set()
    list(prefetched(lambda s: threads.add(threading.current_thread().name), range(4)))
    assert threads and threading.current_thread().name not in threads


def test_prefetched_raises_the_fetch_error_at_its_batch():
    def fetch(s):
        if s == 2:
            raise OSError("bad record")
        return s

    got = []
    with pytest.raises(OSError, match="bad record"):
        for batch in prefetched(fetch, range(5)):
            got.append(batch)
    assert got == [0, 1]
    with pytest.raises(ValueError):
        list(prefetched(fetch, range(2), depth=0))
