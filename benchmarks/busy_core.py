"""Encode and decode under a busy core: the demo image (astronaut, 512x512, msh quality 3) at
1 thread, all threads and the engine's default, with the machine idle and with a competing
process spinning on CPU 0 (a Python busy loop pinned there with os.sched_setaffinity). The
fixed settings run with NICENGINE_THREADS=fixed; the default fits its threads to the free cores
(engine/cpu_threads.py), and its row gives the threads its calls used.

    python benchmarks/busy_core.py [--runs 9] [--write]

Each setting runs in a fresh process (OpenMP reads its environment once, when torch loads), which
codes the image `--runs` times after a warm-up and reports the medians.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import os
import shlex
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, write_section  # noqa: E402

CORES = os.cpu_count() or 1
# setting -> (torch threads, None for the engine's default; environment; torch imported before
# engine, so OpenMP loads with its own default wait, as before issue 39 or when a program
# imports torch first)
FIXED = {"NICENGINE_THREADS": "fixed"}
SETTINGS = {"1 thread": (1, FIXED, False), f"{CORES} threads": (CORES, FIXED, False),
            f"{CORES} threads, torch imported first": (CORES, FIXED, True),
            f"{CORES} threads, OMP_WAIT_POLICY=ACTIVE": (
                CORES, {**FIXED, "OMP_WAIT_POLICY": "ACTIVE"}, False),
            "default": (None, {}, False)}


def child(threads: int | None, runs: int, torch_first: bool) -> None:
    """Time encode and decode here; print {"encode": s, "decode": s, "threads": n} (medians)."""
    if not torch_first:
        importlib.import_module("engine")  # it chooses OpenMP's wait policy before torch loads
    import torch
    from skimage import data as samples

    from engine import Codec, cpu_threads
    from engine.images import to_batch

    if threads is not None:
        torch.set_num_threads(threads)
    used = []
    choose = cpu_threads.threads_for_call
    cpu_threads.threads_for_call = lambda wanted: used.append(choose(wanted)) or used[-1]
    codec = Codec(device="cpu", precision="float32")
    x = to_batch(samples.astronaut())[0]
    stream = codec.compress(x)
    codec.decompress(stream)  # warm-up: tables, coder, allocator
    enc, dec = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        codec.compress(x)
        t1 = time.perf_counter()
        codec.decompress(stream)
        enc.append(t1 - t0)
        dec.append(time.perf_counter() - t1)
    print(json.dumps({"encode": statistics.median(enc), "decode": statistics.median(dec),
                      "threads": statistics.median_low(used)}))


def spin() -> None:
    os.sched_setaffinity(0, {0})
    while True:
        pass


def measure(runs: int) -> list[dict]:
    rows = []
    for busy in (False, True):
        spinner = multiprocessing.Process(target=spin, daemon=True) if busy else None
        if spinner:
            spinner.start()
        try:
            for name, (threads, env, torch_first) in SETTINGS.items():
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(threads or 0), "--runs", str(runs),
                     *(["--torch-first"] if torch_first else [])],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                    env={**os.environ, **env})
                rows.append({"busy": busy, "setting": name, **json.loads(out.stdout)})
                print(rows[-1], flush=True)
        finally:
            if spinner:
                spinner.kill()
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| CPU 0 | setting | threads (median) | encode (ms) | decode (ms) | default / best "
             "of 1 and N (encode, decode) |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        same = [r for r in rows if r["busy"] == row["busy"]]
        best = {k: min(r[k] for r in same if r["setting"] in ("1 thread", f"{CORES} threads"))
                for k in ("encode", "decode")}
        ratio = (f"{row['encode'] / best['encode']:.2f}x, {row['decode'] / best['decode']:.2f}x"
                 if row["setting"] == "default" else "")
        lines.append(f"| {'busy' if row['busy'] else 'idle'} | {row['setting']} | "
                     f"{row['threads']} | {1000 * row['encode']:.0f} | "
                     f"{1000 * row['decode']:.0f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=9)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)  # threads, 0: the default
    p.add_argument("--torch-first", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    if a.child is not None:
        child(a.child or None, a.runs, a.torch_first)
        return
    rows = measure(a.runs)
    text = (f"Date {date.today()}, commit {commit()}, {cpu()}, float32, command: "
            f"`python benchmarks/busy_core.py {shlex.join(sys.argv[1:])}`. Medians of "
            f"{a.runs} codings of the demo image (512x512, msh quality 3); busy: another "
            "process spins on CPU 0.\n\n" + table(rows))
    print(text)
    if a.write:
        write_section("busy_core", "Under a busy core", text)


if __name__ == "__main__":
    main()
