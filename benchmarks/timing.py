"""Wall-clock timing shared by the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeat: int, sync: Callable[[], None] | None = None
            ) -> float:
    """Seconds of the fastest of `repeat` calls of fn, after one warm-up call. `sync` (e.g.
    torch.cuda.synchronize) runs before and after each timed call."""
    sync = sync or (lambda: None)
    fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)
