"""Phase 2 on a codec trained with additive noise, where the rectifier's paper measured its gains:
the same streams decoded as trained, after phase 2 without the rectifier, and after phase 2 with
it.

    python benchmarks/rectifier_noise.py [--arch bmshj2018-hyperprior] [--steps 500] \
        [--phase2-steps 300] [--g-s-lr R] [--images 24] [--write] [--rectify-args --alpha 1]

1. CompressAI's own training loop (benchmarks/compressai_import.py: additive uniform noise,
   lambda 0.0067, batch 8 of --crop sized training crops) trains ARCH from scratch for --steps
   steps (a checkpoint already in --workdir is reused); CompressAI saves it and
   `python -m engine.zoo import-compressai` imports it.
2. Two copies of the weights file (one fingerprint, so one set of streams) each get phase 2 by
   the user's command, with the same steps, crops and seed, side by side:
   `python -m engine.train rectify W` and `python -m engine.train rectify W --decoder-only`.
3. Kodak (evaluation only): each image is coded once; its stream is decoded as trained
   (`rectifier=False`), by the decoder-only companion and by the rectified one. Reported: mean
   bpp, PSNR and MS-SSIM (dB) of each decoding, decode time summed over the images, and the peak
   memory of one decode of kodim01 in a fresh process each.

Run with one thread (OMP_NUM_THREADS=1 reaches the subprocesses too), niced.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
TRAIN = ROOT.parent / "shared" / "data" / "train"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from compressai_import import checkpoint, import_command  # noqa: E402
from results_md import commit, cpu, write_section  # noqa: E402
from timing import peak_rss_in_child, print_peak_rss  # noqa: E402

VARIANTS = ("as trained", "decoder only", "rectifier")


def phase2(weights: Path, a: argparse.Namespace) -> tuple[dict[str, Path], dict[str, dict]]:
    """Copies of `weights` (NAME-dec, NAME-qr) with their phase-2 companions, made by the
    command a user runs, both at once (one thread each); (the copies, the commands' reports,
    each with its wall-clock minutes), by variant."""
    extra = {"decoder only": ("dec", ["--decoder-only"]), "rectifier": ("qr", a.rectify_args)}
    files, runs, start = {}, {}, time.perf_counter()
    for variant, (suffix, options) in extra.items():
        files[variant] = weights.with_name(f"{weights.stem}-{suffix}.safetensors")
        shutil.copyfile(weights, files[variant])
        cmd = [sys.executable, "-m", "engine.train", "rectify", str(files[variant]), "--data",
               str(TRAIN), "--steps", str(a.phase2_steps), "--crops", str(a.crops), "--crop",
               str(a.phase2_crop), *a.g_s_options, *options]
        print("$", " ".join(cmd[1:]), flush=True)
        runs[variant] = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    reports = {}
    for variant, run in runs.items():
        out = run.communicate()[0]
        if run.returncode:
            raise SystemExit(f"phase 2 ({variant}) failed:\n{out}")
        reports[variant] = json.loads(out.strip().splitlines()[-1])
        reports[variant]["minutes"] = (time.perf_counter() - start) / 60
        print(json.dumps(reports[variant]), flush=True)
    return files, reports


def ms_ssim_db(value: float) -> float:
    return -10 * math.log10(1 - value)


def kodak(files: dict[str, Path], limit: int) -> dict:
    """Each image coded once, decoded by each variant: per-variant mean PSNR and MS-SSIM (dB),
    the decode seconds summed over the images, and the mean bpp."""
    from engine import Codec
    from engine.images import list_images, to_batch
    from engine.metrics import ms_ssim, psnr

    codecs = {"rectifier": Codec(weights=str(files["rectifier"]), precision="float32"),
              "decoder only": Codec(weights=str(files["decoder only"]), precision="float32")}
    decode = {"as trained": lambda d: codecs["rectifier"].decompress(d, rectifier=False),
              "decoder only": codecs["decoder only"].decompress,
              "rectifier": codecs["rectifier"].decompress}
    rows = {v: {"psnr": [], "ms_ssim": [], "seconds": 0.0} for v in VARIANTS}
    bpp = []
    images = list_images(KODAK)[:limit]
    with torch.inference_mode():
        warm = codecs["rectifier"].compress(images[0])
        for v in VARIANTS:  # tables and caches, outside the timed decodes
            decode[v](warm)
        for path in images:
            x = to_batch(path)[0]
            data = codecs["rectifier"].compress(x)
            assert data == codecs["decoder only"].compress(x)  # one fingerprint: one stream
            bpp.append(8 * len(data) / (x.shape[1] * x.shape[2]))
            for v in VARIANTS:
                start = time.perf_counter()
                x_hat = decode[v](data)
                rows[v]["seconds"] += time.perf_counter() - start
                rows[v]["psnr"].append(psnr(x_hat, x))
                rows[v]["ms_ssim"].append(ms_ssim_db(ms_ssim(x_hat, x)))
    return {"bpp": float(np.mean(bpp)), "images": len(images),
            **{v: {"psnr": float(np.mean(r["psnr"])), "ms_ssim": float(np.mean(r["ms_ssim"])),
                   "seconds": r["seconds"]} for v, r in rows.items()}}


def memory_probe(weights: str, rectifier: bool) -> None:
    """In a child process: the peak RSS (MiB) of one decode of kodim01 (after a warm-up)."""
    from engine import Codec
    from engine.images import list_images

    torch.set_num_threads(1)
    codec = Codec(weights=weights, precision="float32")
    data = codec.compress(list_images(KODAK)[0])
    codec.decompress(data, rectifier=rectifier)
    print_peak_rss(lambda: codec.decompress(data, rectifier=rectifier))


def report(a: argparse.Namespace, trained: dict, runs: dict, r: dict, mem: dict) -> str:
    base = r["as trained"]
    lines = [
        f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, one "
        f"thread, niced, on a machine shared with other jobs (load average "
        f"{os.getloadavg()[0]:.1f} at the end): times are indicative. Command: "
        f"`OMP_NUM_THREADS=1 nice -n 10 python benchmarks/rectifier_noise.py "
        f"{' '.join(sys.argv[1:])}`.", "",
        f"Codec: CompressAI {a.arch} (N=128, M=192) trained from scratch with CompressAI's own "
        f"loop (additive uniform noise), {a.steps} steps of batch {a.batch} of {a.crop}x{a.crop} "
        "training crops, "
        f"lr {a.lr:g}, lambda 0.0067 ("
        + (f"{trained['minutes']:.1f} min" if trained["minutes"] is not None else
           "the checkpoint of an earlier run, `python benchmarks/compressai_import.py "
           f"--train-only --archs {a.arch} --steps {a.steps} --crop {a.crop} --threads 1 --workdir "
           f"{a.workdir}`")
        + "), imported with "
        "`python -m engine.zoo import-compressai`. Phase 2: `python -m engine.train rectify W "
        f"--steps {a.phase2_steps} --crops {a.crops} --crop {a.phase2_crop} "
        f"{' '.join([*a.g_s_options, *a.rectify_args])}`"
        f" (alpha {runs['rectifier']['alpha']:g}) and the same with `--decoder-only` instead of "
        f"the alpha options, the two side by side ({runs['decoder only']['minutes']:.1f} and "
        f"{runs['rectifier']['minutes']:.1f} min wall-clock). Held-out PSNR (training-pool crops, "
        f"not Kodak): {runs['rectifier']['psnr_without']:.3f} dB as trained, "
        f"{runs['decoder only']['psnr_with']:.3f} decoder only, "
        f"{runs['rectifier']['psnr_with']:.3f} with the rectifier.", "",
        f"Kodak, {r['images']} images, each coded once ({r['bpp']:.4f} bpp on average) and the "
        "same stream decoded three ways:", "",
        "| decoder | PSNR (dB) | gain | MS-SSIM (dB) | gain | decode, s (all images) | "
        "peak RSS, kodim01 (MiB) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for v in VARIANTS:
        m = r[v]
        lines.append(f"| {v} | {m['psnr']:.3f} | {m['psnr'] - base['psnr']:+.3f} | "
                     f"{m['ms_ssim']:.3f} | {m['ms_ssim'] - base['ms_ssim']:+.3f} | "
                     f"{m['seconds']:.1f} | {mem[v]['peak_mib']:.0f} |")
    own = r["rectifier"]["psnr"] - r["decoder only"]["psnr"]
    lines += ["", f"Of the rectified decoder's {r['rectifier']['psnr'] - base['psnr']:+.3f} dB "
                  f"over the codec as trained, {own:+.3f} dB is the rectifier's own (over "
                  "phase 2 without it)."]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        memory_probe(sys.argv[2], bool(int(sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="bmshj2018-hyperprior",
                   choices=("bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"))
    p.add_argument("--steps", type=int, default=500, help="CompressAI training steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--phase2-steps", type=int, default=300)
    p.add_argument("--crops", type=int, default=1024, help="phase 2's training crops")
    p.add_argument("--crop", type=int, default=64, help="CompressAI's training crops' side")
    p.add_argument("--phase2-crop", type=int, default=128, help="phase 2's crops' side")
    p.add_argument("--g-s-lr", type=float, default=None,
                   help="g_s's learning rate in both phase-2 runs (default: rectify's)")
    p.add_argument("--rectify-args", nargs=argparse.REMAINDER, default=["--alpha", "1"],
                   help="options of the rectified run only (last on the line)")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "rectifier_noise")
    p.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    a = p.parse_args()
    a.g_s_options = [] if a.g_s_lr is None else ["--g-s-lr", f"{a.g_s_lr:g}"]
    torch.set_num_threads(1)
    fresh, start = not (a.workdir / f"{a.arch}-trained.pth.tar").exists(), time.perf_counter()
    ckpt = checkpoint(a.arch, "trained", a)
    trained = {"minutes": (time.perf_counter() - start) / 60 if fresh else None}
    weights, said = import_command(ckpt, a.arch)
    print(said, flush=True)
    files, runs = phase2(weights, a)
    r = kodak(files, a.images)
    mem = {v: peak_rss_in_child(__file__, files["decoder only" if v == "decoder only"
                                                else "rectifier"], int(v != "as trained"))
           for v in VARIANTS}
    text = report(a, trained, runs, r, mem)
    print(text)
    if a.write:
        lr = "" if a.g_s_lr is None else f", g_s at {a.g_s_lr:g}"
        write_section(f"rectifier_noise_{a.arch}{lr.replace(', g_s at ', '_gs')}",
                      f"Quantization rectifier on a noise-trained codec ({a.arch}{lr}, CPU)",
                      text)


if __name__ == "__main__":
    main()
