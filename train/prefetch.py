"""Batches fetched ahead of the step: a background thread reads and places batch s + 1 (+ 2 ...) on the
devices while the jitted step s runs, so the input pipeline's host time hides behind the step.

Order and content are unchanged (batch s is still `fetch(s)`), so resumed runs stay exact. One worker:
grain data sources and numpy are safe from one extra thread, and XLA's compute already uses the cores.
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, Sequence


def prefetched(fetch: Callable[[int], Any], steps: Sequence[int], depth: int = 2) -> Iterator[Any]:
    """`fetch(s)` for each s of `steps`, in order, up to `depth` fetched ahead. An error in a fetch is
    raised when its batch is reached; stopping early waits only for the fetches already started."""
    if depth < 1:
        raise ValueError(f"prefetch depth must be at least 1, got {depth}")
    steps = list(steps)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending = collections.deque(pool.submit(fetch, s) for s in steps[:depth])
        for i in range(len(steps)):
            batch = pending.popleft().result()
            if i + depth < len(steps):
                pending.append(pool.submit(fetch, steps[i + depth]))
            yield batch
