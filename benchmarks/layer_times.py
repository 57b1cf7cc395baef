"""Per-layer time of g_a and g_s on the CPU, under the engine's heap policy and under glibc's
defaults, and each layer's rate against a float32 GEMM's at the same thread count; and under
the heap policy in bfloat16 (as `precision="bfloat16"` runs it: autocast, channels-last).

    python benchmarks/layer_times.py [--threads 2] [--repeat 5] [--write]

The mean-scale hyperprior at N=128, M=192 (random weights; vs_compressai.py's architecture) on
kodim23 (768x512), each layer timed alone on its own input (the fastest of --repeat calls after
a warm-up), in a fresh process per heap setting. GFLOP/s counts a convolution's multiply-adds
as 2 operations (Winograd layers do fewer: their figure is the direct convolution's work over
the time). The reference rate is a float32 GEMM's (2048^3 through torch's BLAS, MKL here), which
oneDNN's best convolutions may exceed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, write_section  # noqa: E402
from vs_compressai import KODIM, load_image  # noqa: E402

HEAPS = {"retain": "engine's heap policy", "system": "glibc's defaults"}


def best(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def flops(layer: torch.nn.Module, x: torch.Tensor) -> float:
    """2 x the multiply-adds of a layer on x (B, C, H, W): its convolution's (direct), and a
    GDN's or an IGDN's C x C sum over each output pixel."""
    from engine.models.layers import GDN, SubpelConv

    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    if isinstance(layer, GDN):
        return 2.0 * pixels * x.shape[1] ** 2
    conv = layer.conv if isinstance(layer, SubpelConv) else layer
    s, (kh, kw) = conv.stride[0], conv.kernel_size
    work = 2.0 * pixels / (s * s) * conv.out_channels * conv.in_channels * kh * kw
    if isinstance(layer, SubpelConv) and layer.igdn is not None:
        c = conv.out_channels // layer.r**2
        work += 2.0 * pixels * layer.r**2 * c * c
    return work


def measure(repeat: int) -> dict:
    """In this process: the GEMM rate and every layer's time and work."""
    from engine import precision  # (and the heap policy, as NICENGINE_HEAP says)
    from engine.models import MeanScaleHyperprior, ModelConfig

    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(128, 192)).eval().requires_grad_(False)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    rows = []
    with torch.inference_mode():
        gemm = 2 * 2048**3 / best(lambda: a @ b, repeat) / 1e9
        h = load_image(KODIM)
        for name, net in (("g_a", model.g_a), ("g_s", model.g_s)):
            if name == "g_s":
                h = torch.round(h)
            for i, layer in enumerate(net):
                seconds = best(lambda layer=layer, h=h: layer(h), repeat)
                with precision.transforms_in(torch.bfloat16), precision.transform(h) as hb:
                    bf16 = best(lambda layer=layer, hb=hb: layer(hb), repeat)
                rows.append({"net": name, "layer": i, "type": type(layer).__name__,
                             "input": list(h.shape), "ms": 1e3 * seconds,
                             "ms_bfloat16": 1e3 * bf16, "gflop": flops(layer, h) / 1e9})
                h = layer(h)
    return {"gemm": gemm, "rows": rows}


def in_child(heap: str, threads: int, repeat: int) -> dict:
    env = {**os.environ, "NICENGINE_HEAP": heap}
    run = subprocess.run([sys.executable, __file__, "--child", str(threads), str(repeat)],
                         capture_output=True, text=True, check=True, env=env)
    return json.loads(run.stdout.strip().splitlines()[-1])


def report(results: dict, threads: int, repeat: int) -> str:
    lines = [f"Date {date.today()}, commit {commit()}, {cpu()}, {threads} threads, torch "
             f"{torch.__version__}. Command: `python benchmarks/layer_times.py --threads "
             f"{threads} --repeat {repeat} --write`. N=128, M=192, random weights, kodim23; "
             "fastest of the repeats; GFLOP/s = the direct convolution's (and GDN's) work / time; "
             "against a "
             f"float32 GEMM of 2048^3, {results['retain']['gemm']:.0f} GFLOP/s here.", "",
             "| network | layer | input | ms, " + HEAPS["system"] + " | ms, " + HEAPS["retain"]
             + " | GFLOP | GFLOP/s (policy) | of the GEMM's rate | ms, bfloat16 (policy) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    gemm = results["retain"]["gemm"]
    for old, new in zip(results["system"]["rows"], results["retain"]["rows"], strict=True):
        rate = new["gflop"] / (new["ms"] / 1e3)
        lines.append(f"| {new['net']} | {new['layer']} {new['type']} | "
                     f"{'x'.join(map(str, new['input'][1:]))} | {old['ms']:.1f} | "
                     f"{new['ms']:.1f} | {new['gflop']:.2f} | {rate:.0f} | {rate / gemm:.0%} | "
                     f"{new['ms_bfloat16']:.1f} |")
    for net in ("g_a", "g_s"):
        total = {h: sum(r["ms"] for r in results[h]["rows"] if r["net"] == net) for h in HEAPS}
        bf16 = sum(r["ms_bfloat16"] for r in results["retain"]["rows"] if r["net"] == net)
        lines.append(f"| {net} | all | | {total['system']:.1f} | {total['retain']:.1f} | | | | "
                     f"{bf16:.1f} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        torch.set_num_threads(int(sys.argv[2]))
        print(json.dumps(measure(int(sys.argv[3]))))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    results = {heap: in_child(heap, a.threads, a.repeat) for heap in HEAPS}
    text = report(results, a.threads, a.repeat)
    print(text)
    if a.write:
        write_section("layer_times", "Per-layer time of g_a and g_s (CPU)", text)


if __name__ == "__main__":
    main()
