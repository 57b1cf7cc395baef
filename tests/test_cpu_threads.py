"""engine/cpu_threads.py: fewer torch threads while other work holds cores."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from engine import Codec, cpu_threads
from tests.conftest import smooth_image


@pytest.fixture
def two_cores(monkeypatch, tmp_path):
    """A 2-core machine whose /proc/loadavg the test writes: set(runnable tasks)."""
    monkeypatch.setattr(cpu_threads.os, "cpu_count", lambda: 2)
    monkeypatch.delenv("NICENGINE_THREADS", raising=False)
    loadavg = tmp_path / "loadavg"
    monkeypatch.setattr(cpu_threads, "LOADAVG", loadavg)
    monkeypatch.setattr(cpu_threads, "_own_running", lambda: 1)  # the caller

    def set_runnable(n: int) -> None:
        loadavg.write_text(f"0.52 0.58 0.59 {n}/467 1234\n")

    return set_runnable


@pytest.mark.parametrize("runnable, wanted, expected", [
    (1, 2, 2),  # only the caller: both cores
    (2, 2, 1),  # one competitor holds a core
    (5, 2, 1),  # saturated: still one thread
    (2, 1, 1),
    (1, 8, 2),  # never more than the free cores
])
def test_threads_fit_the_cores_left_free(two_cores, runnable, wanted, expected):
    two_cores(runnable)
    assert cpu_threads.threads_for_call(wanted) == expected


def test_the_least_of_several_reads_counts(two_cores, monkeypatch):
    """A task that passes through one read does not cost a thread."""
    reads = iter(["0 0 0 3/9 1", "0 0 0 1/9 1", "0 0 0 3/9 1"])
    monkeypatch.setattr(cpu_threads.Path, "read_text", lambda self: next(reads))
    assert cpu_threads.threads_for_call(2) == 2


def test_this_processs_own_running_threads_are_not_competitors(two_cores, monkeypatch):
    two_cores(3)
    monkeypatch.setattr(cpu_threads, "_own_running", lambda: 2)
    assert cpu_threads.threads_for_call(2) == 1
    monkeypatch.setattr(cpu_threads, "_own_running", lambda: 3)
    assert cpu_threads.threads_for_call(2) == 2


def test_own_running_threads_are_read_from_proc():
    """A thread of this process busy in torch (the GIL released) counts as running."""
    assert cpu_threads._own_running() >= 1
    stop = threading.Event()

    def busy() -> None:
        a = torch.ones(256, 256)
        while not stop.is_set():
            a @ a

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        assert max(cpu_threads._own_running() for _ in range(50)) >= 2
    finally:
        stop.set()
        worker.join()


def test_fixed_or_unknown_load_keeps_torchs_count(two_cores, monkeypatch, tmp_path):
    two_cores(4)
    monkeypatch.setenv("NICENGINE_THREADS", "fixed")
    assert cpu_threads.threads_for_call(2) == 2
    monkeypatch.delenv("NICENGINE_THREADS")
    monkeypatch.setattr(cpu_threads, "LOADAVG", tmp_path / "absent")
    assert cpu_threads.threads_for_call(2) == 2


def test_compress_runs_on_the_free_cores_and_restores_the_count(two_cores, monkeypatch):
    """Under load, compress runs its networks with one thread and leaves torch's count as it
    found it; decompress keeps torch's count (its pixels' last bits depend on it)."""
    two_cores(3)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec = Codec(device="cpu")
        model = codec.model()
        seen = []
        for name in ("analyze", "synthesize"):
            original = getattr(model, name)

            def spy(*args, original=original, **kwargs):
                seen.append(torch.get_num_threads())
                return original(*args, **kwargs)

            monkeypatch.setattr(model, name, spy)
        data = codec.compress(smooth_image(64, 64))
        codec.decompress(data)
        assert seen == [1, 2] and torch.get_num_threads() == 2
        two_cores(1)
        seen.clear()
        assert codec.compress(smooth_image(64, 64)) == data
        assert seen == [2]
    finally:
        torch.set_num_threads(saved)


def test_no_call_starts_while_a_compress_runs_cut(two_cores, monkeypatch):
    """torch's count is the process's, and a thread takes it on its first torch call: a decode
    on a new thread while another thread's compress ran cut would run at the cut count for good,
    with other pixels. So it waits for the cut to end."""
    two_cores(3)
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        codec = Codec(device="cpu")
        x = smooth_image(256, 256)
        data = codec.compress(x)
        expected = codec.decompress(data)
        model = codec.model()
        original, analyzing = model.analyze, threading.Event()

        def slow_analyze(*args, **kwargs):
            analyzing.set()
            time.sleep(0.3)  # the decode below starts meanwhile
            return original(*args, **kwargs)

        monkeypatch.setattr(model, "analyze", slow_analyze)
        worker = threading.Thread(target=codec.compress, args=(x,))
        worker.start()
        analyzing.wait(30)
        decoded = {}

        def decode() -> None:
            decoded["x"] = codec.decompress(data)
            decoded["threads"] = torch.get_num_threads()

        thread = threading.Thread(target=decode)
        thread.start()
        thread.join(60)
        worker.join(60)
        assert decoded["threads"] == 2 and torch.equal(decoded["x"], expected)
    finally:
        torch.set_num_threads(saved)
