"""Folder compression throughput: Ray Data actors against a single process (and a process pool),
side by side in one run, on the 24 Kodak images.

    python benchmarks/bench_dataset.py [--folder ../shared/data/kodak] [--repeat 2] [--write]

Every run is `engine.dataset.compress_dir` over the same folder into a fresh output folder with
the shipped default model: one process (`Workers(count=1)`: one codec in this process, torch on
every core), a process pool and Ray (`Workers(ray="local")`: a local cluster of this machine's
CPUs; one actor per CPU, each with one core). Times are wall time of the whole call, workers'
start and model loading included (Ray's cluster start is given apart); best of `--repeat`. The
runs must write identical streams. `--write` puts the table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, write_section  # noqa: E402

from engine.dataset import Workers, compress_dir  # noqa: E402
from engine.images import list_images  # noqa: E402


def timed_run(folder: Path, workers: Workers, repeat: int, scratch: Path
              ) -> tuple[float, dict[str, bytes]]:
    """Best wall time of `repeat` runs into fresh folders, and the streams the last one wrote."""
    best = float("inf")
    for i in range(repeat):
        out = scratch / f"{workers.ray or 'here'}-{workers.count}-{i}"
        start = time.perf_counter()
        summary = compress_dir(folder, out, workers=workers, progress=False)
        best = min(best, time.perf_counter() - start)
        if summary.failures or summary.done != summary.files:
            raise RuntimeError(f"run {workers} did not compress every image: {summary}")
    streams = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.nic")}
    return best, streams


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folder", type=Path, default=KODAK)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    import ray

    images = len(list_images(a.folder))
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    scratch = Path(tempfile.mkdtemp(prefix="bench_dataset-"))
    try:
        rows = {}
        rows[f"one process (torch on {torch.get_num_threads()} threads)"] = timed_run(
            a.folder, Workers(count=1), a.repeat, scratch)
        rows[f"process pool ({cores} processes, 1 thread each)"] = timed_run(
            a.folder, Workers(count=cores), a.repeat, scratch)
        start = time.perf_counter()
        ray.init(address="local", num_cpus=cores, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        ray_start = time.perf_counter() - start
        rows[f"Ray Data, local cluster ({cores} actors, 1 CPU each)"] = timed_run(
            a.folder, Workers(ray="local"), a.repeat, scratch)
        ray.shutdown()
    finally:
        shutil.rmtree(scratch)
    load_after = os.getloadavg()
    (single, reference), *_ = rows.values()
    if any(streams != reference for _, streams in rows.values()):
        raise RuntimeError("the runs wrote different streams")

    lines = ["| run | wall time (s) | images/s | throughput / one process's |",
             "| --- | --- | --- | --- |"]
    for name, (seconds, _) in rows.items():
        lines.append(f"| {name} | {seconds:.2f} | {images / seconds:.2f} | "
                     f"{single / seconds:.2f}x |")
    lines.append(f"| starting the local Ray cluster (once, not in the Ray row) | "
                 f"{ray_start:.2f} | | |")
    text = "\n".join([
        f"Date {date.today()}, commit {commit()}, {cpu()}; torch {torch.__version__}, "
        f"Ray {ray.__version__}.",
        f"Command: `python benchmarks/bench_dataset.py --repeat {a.repeat} --write`. "
        f"{images} images of {a.folder.name}, shipped default model, best of {a.repeat} runs "
        "each, all in one run; every run wrote the same streams. Wall time of the whole "
        "`compress_dir` call: workers' start and model loading included.",
        f"This machine's {cores} cores were shared with other engineers' work during the run "
        f"(load average {load_before[0]:.1f} before, {load_after[0]:.1f} after): the ratios "
        "hold for this run only; no GPU here, so the one-actor-per-GPU path is not measured.",
        "",
        *lines,
    ])
    print(text)
    if a.write:
        write_section("bench_dataset", "Folder compression: Ray against one process (CPU)",
                      text)


if __name__ == "__main__":
    main()
