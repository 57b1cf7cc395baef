"""Wall-clock timing and peak memory, shared by the benchmark scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


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


def peak_rss(fn: Callable[[], object]) -> dict[str, float]:
    """{"peak_mib": the peak RSS during fn(), "growth_mib": its growth over the RSS just before
    the call}. Linux only (/proc); run it in a fresh process, whose RSS holds nothing else."""
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current RSS
    before = _vm("VmRSS")
    fn()
    peak = _vm("VmHWM")
    return {"peak_mib": peak, "growth_mib": peak - before}


def print_peak_rss(fn: Callable[[], object]) -> None:
    """The child's side of `peak_rss_in_child`: print `peak_rss(fn)` as the last line."""
    print(json.dumps(peak_rss(fn)))


def peak_rss_in_child(script: str | Path, *args: object) -> dict[str, float]:
    """`peak_rss` in a fresh process: runs `python SCRIPT --probe ARGS...`, whose probe ends
    with `print_peak_rss`."""
    run = subprocess.run([sys.executable, str(script), "--probe", *map(str, args)],
                         capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def _vm(field: str) -> float:
    """A /proc/self/status memory field in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)
