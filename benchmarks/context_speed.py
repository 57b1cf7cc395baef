"""Joint autoregressive models against CompressAI: the same checkpoint, the same Kodak images,
side by side in one run, at 1 and 2 threads (each architecture and thread count in a fresh
process).

    python benchmarks/context_speed.py [--archs mbt2018 cheng2020-anchor] [--images 3]
        [--threads 1 2] [--write]

For each architecture at CompressAI's quality 3 (mbt2018: N=M=192; cheng2020-anchor: N=128) with
CompressAI's random initial weights (the time of either codec does not depend on training),
imported with `python -m engine.zoo import-compressai` (which calibrates the integer context
model): compress and decompress time per image of CompressAI 1.2.8 (its serial loop over the
H*W latent positions) and of this engine (W + 3(H-1) wavefront steps), image by image, back to
back; the engine's time split into its stages (engine.profiling). CompressAI is installed as
benchmarks/compressai_import.py says.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from compressai_import import checkpoint, import_command  # noqa: E402
from results_md import commit, cpu, write_section  # noqa: E402

from engine import Codec  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.models.integer_context import wavefront_steps  # noqa: E402
from engine.precision import PRECISIONS, describe  # noqa: E402
from tests.compressai_reference import load_compressai  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "kodak"


def in_child(arch: str, threads: int, ckpt: Path, weights: Path) -> str:
    """The table row of one architecture at one thread count, measured in a fresh process:
    torch sizes NNPACK's thread pool at its first use and keeps it, so a process that ran at 2
    threads would run its NNPACK layers at 2 threads in the 1-thread rows."""
    args = [a for a in sys.argv[1:] if a != "--write"]
    run = subprocess.run([sys.executable, __file__, *args, "--child", arch, str(threads),
                          str(ckpt), str(weights)], capture_output=True, text=True, check=True)
    return run.stdout.strip().splitlines()[-1]


def measure(arch: str, threads: int, ckpt: Path, weights: Path, a: argparse.Namespace,
            images: list[Path]) -> str:
    """The row of CompressAI's checkpoint `ckpt` of `arch` against its import `weights`."""
    from compressai.zoo import image_models

    from engine.zoo.compressai import read_checkpoint

    state, _ = read_checkpoint(ckpt)
    theirs = image_models[arch](quality=3)
    theirs.load_state_dict(state)
    theirs.eval().update()
    ours = Codec(weights=weights, precision=a.precision, threads=threads)
    times = {"cai_c": 0.0, "cai_d": 0.0, "our_c": 0.0, "our_d": 0.0}
    with torch.inference_mode():
        # Warm-up, both codecs on the first image: the steady state of a process that codes many
        # (the heap's pages and oneDNN's kernels for the size are then in place).
        x = to_batch(images[0])
        ours.decompress(ours.compress(x))
        out = theirs.compress(x)
        theirs.decompress(out["strings"], out["shape"])
        for path in images:
            x = to_batch(path)
            t0 = time.perf_counter()
            out = theirs.compress(x)
            t1 = time.perf_counter()
            theirs.decompress(out["strings"], out["shape"])
            t2 = time.perf_counter()
            data = ours.compress(x)
            t3 = time.perf_counter()
            ours.decompress(data)
            t4 = time.perf_counter()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key] += dt / len(images)
    h, w = (s // 16 for s in x.shape[2:])
    return (f"| {arch} (N={theirs.N}, M={theirs.M}) | {threads} | {times['cai_c']:.2f} / "
            f"{times['our_c']:.2f} ({times['cai_c'] / times['our_c']:.1f}x) | "
            f"{times['cai_d']:.2f} / {times['our_d']:.2f} "
            f"({times['cai_d'] / times['our_d']:.1f}x) | {h * w} / {wavefront_steps(h, w)} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["mbt2018", "cheng2020-anchor"])
    p.add_argument("--images", type=int, default=3, help="the first N Kodak images")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "compressai_import")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="of this engine's g_a and g_s (default: its default)")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)  # ARCH THREADS CKPT WEIGHTS
    a = p.parse_args()
    compressai = load_compressai()
    images = list_images(KODAK)[: a.images]
    if a.child:
        arch, threads, ckpt, weights = a.child
        torch.set_num_threads(int(threads))
        print(measure(arch, int(threads), Path(ckpt), Path(weights), a, images))
        return
    load_before = os.getloadavg()[0]
    rows = []
    for arch in a.archs:
        ckpt = checkpoint(arch, "random", a)
        weights, _ = import_command(ckpt, arch)
        for threads in a.threads:
            rows.append(in_child(arch, threads, ckpt, weights))
            print(rows[-1], flush=True)
    text = "\n".join([
        f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, "
        f"CompressAI {compressai.__version__}; the first {len(images)} Kodak images (768x512 "
        f"and 512x768), seconds per image, each codec's compress and decompress back to back "
        f"image by image. Load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end.",
        f"Command: `python benchmarks/context_speed.py {' '.join(sys.argv[1:])}`. Random "
        "weights of CompressAI's quality-3 shapes (speed does not depend on training), "
        "imported with `python -m engine.zoo import-compressai`; this engine at "
        f"`Codec(weights=W, precision=\"{a.precision}\", threads=T)` "
        f"({describe(a.precision, torch.device('cpu'))}).",
        "",
        "| architecture | threads | compress s, CompressAI / ours (ratio) | decompress s, "
        "CompressAI / ours (ratio) | serial steps: CompressAI / ours |",
        "| --- | --- | --- | --- | --- |",
        *rows])
    print(text)
    if a.write:
        write_section("context_speed", "Joint autoregressive models against CompressAI (CPU)",
                      text)


if __name__ == "__main__":
    main()
