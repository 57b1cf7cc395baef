"""Exact integer convolution (`nicengine_kernels.dispatch.int_conv`) at the integer hyper-decoder's
layer shapes, against float convolutions of the same values, side by side in one run.

    python benchmarks/bench_int_conv.py [--repeat 5] [--write]

Each layer is h_s's k = 3 convolution on one Kodak image (512 x 768, z at 8 x 12): C -> Co
channels at H x W. On the CPU, at one thread and at all of torch's threads: the CPU's exact
paths (`int_conv_gemm`: the int8 GEMM of csrc/int_gemm.cpp where the CPU has AVX2, and the
float32 GEMMs over exact chunks), the reference (int64 matmul), and F.conv2d in float32 and
float64; on a GPU also the Triton kernel and both F.conv2d (TF32 off). Times are the
fastest of --repeat calls after a warm-up. GOPS = 2*B*Co*C*k*k*H*W / s; GB/s = input, weights and
output in each method's dtypes, read or written once, / s. The exact paths are checked against
the reference first. `--write` puts the table into benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from datetime import date
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, machine, write_section  # noqa: E402
from timing import best_of  # noqa: E402

from nicengine_kernels import int_conv_gemm as gemm_module  # noqa: E402
from nicengine_kernels.int_conv_reference import int_conv_reference  # noqa: E402

K = 3
# (model, (C, Co, H, W)) for h_s's three convolutions: SubpelConv(N, M), SubpelConv(M, 3M/2)
# (conv to 4x the channels, then a 2x shuffle) and conv(3M/2, 2M).
LAYERS = [("N=64, M=128", (64, 512, 8, 12)), ("N=64, M=128", (128, 768, 16, 24)),
          ("N=64, M=128", (192, 256, 32, 48)), ("N=128, M=192", (128, 768, 8, 12)),
          ("N=128, M=192", (192, 1152, 16, 24)), ("N=128, M=192", (288, 384, 32, 48))]


def _float_conv(dtype: torch.dtype, x: torch.Tensor, weight: torch.Tensor) -> Callable:
    xf, wf = x.to(dtype), weight.to(dtype)
    return partial(F.conv2d, xf, wf, padding=K // 2)


def _cpu_path(int8: bool, x: torch.Tensor, weight: torch.Tensor) -> Callable:
    """int_conv_gemm through its int8 GEMM or its float32 one."""
    def call() -> torch.Tensor:
        saved, gemm_module.INT8_GEMM = gemm_module.INT8_GEMM, int8
        try:
            return gemm_module.int_conv_gemm(x, weight)
        finally:
            gemm_module.INT8_GEMM = saved
    return call


def methods(x: torch.Tensor, weight: torch.Tensor) -> dict[str, tuple[Callable, int, bool]]:
    """name -> (call, element bytes of input and weights, exact): the paths to time on x's
    device, all on the same values."""
    found = {"float32 F.conv2d": (_float_conv(torch.float32, x, weight), 4, False),
             "float64 F.conv2d": (_float_conv(torch.float64, x, weight), 8, False)}
    if x.is_cuda:
        from nicengine_kernels.int_conv import int_conv_triton

        return {"int8 Triton": (partial(int_conv_triton, x, weight), 1, True), **found}
    simd = {"int8 GEMM (int_gemm.cpp)": (_cpu_path(True, x, weight), 1, True)}
    return {**(simd if gemm_module.INT8_GEMM else {}),  # the CPU has AVX2
            "float32 GEMM over exact chunks": (_cpu_path(False, x, weight), 1, True),
            "int8 reference": (partial(int_conv_reference, x, weight), 1, True), **found}


def bench(device: str, threads: list[int], repeat: int) -> list[str]:
    """The table's rows: every layer, thread count and method."""
    sync = torch.cuda.synchronize if device == "cuda" else None
    rows = []
    for model, (c, co, h, w) in LAYERS:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(-128, 128, (1, c, h, w), generator=g, dtype=torch.int8).to(device)
        weight = torch.randint(-127, 128, (co, c, K, K), generator=g, dtype=torch.int8).to(device)
        ops = 2 * co * c * K * K * h * w
        expected = int_conv_reference(x, weight)
        for n in threads:
            torch.set_num_threads(n)
            found = methods(x, weight)
            for name, (call, _, exact) in found.items():
                if exact and not torch.equal(call(), expected):
                    raise RuntimeError(f"{name} differs from the reference at {(c, co, h, w)}")
            times = {name: best_of(call, repeat, sync) for name, (call, _, _) in found.items()}
            for name, (_, size, exact) in found.items():
                s = times[name]
                out_size = 4 if exact else size  # int32 sums; float outputs in their dtype
                moved = (x.numel() + weight.numel()) * size + co * h * w * out_size
                rows.append(f"| {model} | {c} -> {co}, {h}x{w} | {n} | {name} | {1e3 * s:.2f} | "
                            f"{ops / s / 1e9:.1f} | {moved / s / 1e9:.2f} | "
                            f"{s / times['float32 F.conv2d']:.2f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    all_threads = torch.get_num_threads()
    devices = {"cpu": sorted({1, all_threads})}
    if torch.cuda.is_available():
        torch.backends.cudnn.allow_tf32 = False  # float32 convolutions in float32
        devices["cuda"] = [all_threads]
    sections = []
    load_before = os.getloadavg()[0]
    for device, threads in devices.items():
        rows = bench(device, threads, a.repeat)
        torch.set_num_threads(all_threads)
        where = machine(device) if device == "cuda" else cpu()
        sections += [f"{device}: {where}", "",
                     "| model | layer (C -> Co, H x W) | threads | method | ms | GOPS | GB/s | "
                     "time / float32 conv's |", "|" + " --- |" * 8, *rows, ""]
    text = "\n".join([
        f"Date {date.today()}, commit {commit()}, torch {torch.__version__}. Command: "
        f"`python benchmarks/bench_int_conv.py --repeat {a.repeat}{' --write' * a.write}`. "
        f"k = {K}, one image; fastest of {a.repeat} calls; the int8 paths equal the reference "
        "bit for bit on every layer (checked in the run). Load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on "
        f"{os.cpu_count()} cores.", "",
        *sections]).rstrip()
    print(text)
    if a.write:
        write_section("bench_int_conv", "Exact integer convolution", text)


if __name__ == "__main__":
    main()
