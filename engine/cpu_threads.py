"""How many threads encoding uses on the CPU: torch's, fewer while other work holds cores.

OpenMP and oneDNN split each layer evenly over their threads, so a layer waits for its slowest
thread: when another process holds a core, the thread that shares it runs at half speed, and 2
threads encoded the demo image 2.0x slower than 1 (benchmarks/RESULTS.md, "Under a busy
core"). So before each compress call the engine counts the tasks of other processes that are
running or waiting to run (the fourth field of /proc/loadavg, counted when read, less this
process's own running threads; the least of a few reads, as a competitor holding a core is in
every one and a passing task rarely is), and runs the call with at most as many threads as that
leaves cores free, and at least one.

The streams do not depend on the thread count (the same bytes at 1 and 2 threads for every
image measured). Decoding keeps torch's count: its largest layers run on NNPACK, whose thread
pool balances work between threads (decoding held up under a busy core: RESULTS.md), and the
decoded pixels' last bits depend on the thread count, which should not follow the load. Torch
creates NNPACK's pool on its first use with the thread count of that moment and keeps it, so
the first compress call creates it at the full count before cutting (else one busy moment
would leave decoding at one thread for good). torch's count is the process's, and a thread takes
it on its first torch call, so while a compress call runs cut no other engine call starts (a
decode on a new thread would otherwise run at the cut count for good).

`NICENGINE_THREADS=fixed` keeps torch's count whatever the load. Where /proc/loadavg does not
exist (macOS, Windows) nothing changes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

LOADAVG = Path("/proc/loadavg")
OWN_THREADS = Path("/proc/self/task")
READS, READ_GAP_S = 3, 0.0002
_nnpack_pool_made = False
_state = threading.Condition()
_calls = 0  # engine calls in flight in this process
_cutter: int | None = None  # the thread whose compress call runs with the count cut


def _own_running() -> int:
    """This process's threads that are running or runnable (the caller at least)."""
    running = 0
    for task in OWN_THREADS.iterdir():
        with contextlib.suppress(OSError, IndexError):  # a thread that ended meanwhile
            running += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
    return max(1, running)


def other_runnable_tasks() -> int | None:
    """The least count, over READS reads, of other processes' running or runnable tasks, or
    None where the system does not say."""
    counts = []
    for i in range(READS):
        if i:
            time.sleep(READ_GAP_S)
        try:
            running = int(LOADAVG.read_text().split()[3].split("/")[0])
        except (OSError, IndexError, ValueError):
            return None
        counts.append(running - _own_running() if running > 1 else 0)  # 1: the caller alone
        if counts[-1] <= 0:
            break
    return max(0, min(counts))


def threads_for_call(wanted: int) -> int:
    """At most `wanted`, at most the cores that other processes leave free, at least 1."""
    if wanted == 1 or os.environ.get("NICENGINE_THREADS", "").lower() == "fixed":
        return wanted
    others = other_runnable_tasks()
    if others is None:
        return wanted
    return max(1, min(wanted, (os.cpu_count() or 1) - others))


def _make_nnpack_pool() -> None:
    """Create torch's NNPACK thread pool now, at torch's current thread count."""
    global _nnpack_pool_made
    if not _nnpack_pool_made:
        _nnpack_pool_made = True
        if torch.backends.nnpack.is_available() and torch._nnpack_available():
            x = torch.zeros(1, 1, 4, 4)
            torch._nnpack_spatial_convolution(x, torch.zeros(1, 1, 3, 3), None, [1, 1], [1, 1])


def on_free_cores(fn: Callable) -> Callable:
    """fn, run with torch's thread count cut to `threads_for_call` and restored after. A call
    that starts while another engine call runs in this process keeps torch's count: sharing
    cores between its own threads is the program's choice, and this process's threads change
    state too fast to be told from other work reliably."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _calls, _cutter
        with _state:
            wanted = _enter()
            _make_nnpack_pool()
            use = threads_for_call(wanted) if _calls == 1 else wanted
            if use != wanted:
                torch.set_num_threads(use)
                _cutter = threading.get_ident()
        try:
            return fn(*args, **kwargs)
        finally:
            with _state:
                if use != wanted:
                    torch.set_num_threads(wanted)
                    _cutter = None
                    _state.notify_all()
                _calls -= 1
    return wrapper


def at_full_threads(fn: Callable) -> Callable:
    """fn (decoding) as an engine call in flight that never runs during a cut, so at torch's
    full count (decoded pixels' last bits depend on it)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _calls
        with _state:
            _enter()
        try:
            return fn(*args, **kwargs)
        finally:
            with _state:
                _calls -= 1
    return wrapper


def _enter() -> int:
    """Under _state: wait while another thread's call runs with the count cut, count this call
    in, and return torch's count. torch's count is the process's: a thread that first runs
    torch during a cut keeps the cut count for good, so no engine call may start then."""
    global _calls
    _state.wait_for(lambda: _cutter in (None, threading.get_ident()))
    _calls += 1
    return torch.get_num_threads()
