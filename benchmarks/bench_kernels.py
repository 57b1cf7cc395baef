"""Benchmarks of the fused kernels at the sizes of real latents (N=128, M=192 model).

CPU, the PyTorch references (pytest-benchmark):
    pytest benchmarks/bench_kernels.py --benchmark-enable
GPU, kernel vs eager PyTorch vs torch.compile: triton.testing.do_bench medians (L2 flushed
between runs) and the kernel's achieved GB/s against a device-to-device copy on the same GPU;
each kernel is first checked against its reference on the GPU:
    python benchmarks/bench_kernels.py [--dtype bfloat16] [--no-compile] [--json FILE] [--write]
The same on the CPU at a toy size, the kernels under the Triton interpreter: a test of this
script (gpu_session.sh --dry-run), whose figures say nothing about a GPU:
    TRITON_INTERPRET=1 python benchmarks/bench_kernels.py --dry-run [--json FILE]
The whole codec under NVTX ranges, for Nsight Systems (docs/PROFILING.md):
    python benchmarks/bench_kernels.py --codec
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from engine.entropy.gaussian import LIKELIHOOD_MIN, SCALE_MIN, SCALES
from engine.profiling import stage
from nicengine_kernels import dispatch
from nicengine_kernels.gdn_reference import gdn_reference
from nicengine_kernels.quantize_reference import quantize_reference, quantize_train_reference
from nicengine_kernels.subpel_reference import subpel_igdn_reference, subpel_reference

sys.path.insert(0, str(Path(__file__).parent))
from results_md import commit, write_section  # noqa: E402

N, M = 128, 192
SIZES = {"kodak": (512, 768), "1080p": (1088, 1920)}  # (H, W) padded to a multiple of 64
TOY = {"toy": (64, 64)}  # --dry-run: the smallest image that every case covers
TOL = {torch.float64: 1e-6, torch.float32: 2e-3, torch.float16: 2e-3, torch.bfloat16: 2e-2}
BOUNDS = {"scale_min": SCALE_MIN, "likelihood_min": LIKELIHOOD_MIN}  # the entropy model's


@dataclass
class Case:
    """One kernel call: `run(fn)` calls the kernel's dispatcher, the reference or its compiled
    form on the same inputs. `bytes`: the least traffic, every input read and output written
    once. Integer outputs must match the reference exactly, float ones too if `exact`, else
    within TOL. `check`: False where the outputs are random (training noise)."""

    name: str
    kernel: Callable
    reference: Callable
    args: tuple
    bytes: int
    exact: bool = False
    check: bool = True
    step: Callable | None = None

    def run(self, fn: Callable):
        return fn(*self.args) if self.step is None else self.step(fn, *self.args)


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _gdn_params(c: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    beta = 0.5 + torch.rand(c, device=device)
    gamma = torch.rand(c, c, device=device) * 0.5 / c
    return beta.to(dtype), gamma.to(dtype)


def _subpel_igdn(name: str, c_in: int, h: int, w: int, dtype, device) -> Case:
    y = torch.randn(1, c_in, h, w, device=device, dtype=dtype)
    bias = 0.1 * torch.randn(c_in, device=device, dtype=dtype)
    beta, gamma = _gdn_params(c_in // 4, dtype, device)
    return Case(name, dispatch.subpel_igdn, subpel_igdn_reference, (y, bias, 2, beta, gamma),
                2 * _nbytes(y))


def _subpel(name: str, c_in: int, h: int, w: int, lrelu: bool, dtype, device) -> Case:
    y = torch.randn(1, c_in, h, w, device=device, dtype=dtype)
    bias = torch.randn(c_in, device=device, dtype=dtype)
    return Case(name, dispatch.subpel, subpel_reference, (y, bias, 2, lrelu), 2 * _nbytes(y),
                exact=dtype == torch.float64)


def _gdn(name: str, h: int, w: int, dtype, device) -> Case:
    x = torch.randn(1, N, h, w, device=device, dtype=dtype)
    beta, gamma = _gdn_params(N, dtype, device)
    return Case(name, dispatch.gdn, gdn_reference, (x, beta, gamma), 2 * _nbytes(x))


def _latents(h: int, w: int, dtype, device):
    y = 4 * torch.randn(1, M, h, w, device=device)
    means = torch.randn(1, M, h, w, device=device, dtype=dtype)
    scales = torch.exp(torch.empty(1, M, h, w, device=device, dtype=dtype).uniform_(-2, 4))
    return y, scales, means


def _quantize(name: str, h: int, w: int, device) -> Case:
    """The coding form as the codec calls it: float32 y, float64 scales and means."""
    y, scales, means = _latents(h, w, torch.float64, device)
    bounds = torch.as_tensor(SCALES[:-1], device=device)
    outputs = 2 * y.numel() * 4 + y.numel() * 8  # symbols, indexes (int32), likelihoods
    return Case(name, partial(dispatch.quantize, **BOUNDS), partial(quantize_reference, **BOUNDS),
                (y, scales, means, bounds), _nbytes(y, scales, means) + outputs)


def _train_step(fn, y, scales, means, g_y_hat, g_lik):
    out = fn(y, scales, means, True)
    return torch.autograd.grad(out, (y, scales, means), (g_y_hat, g_lik))


def _quantize_train(name: str, h: int, w: int, dtype, device) -> Case:
    """The training form, forward and backward, with noise as in training."""
    inputs = [t.to(dtype).requires_grad_() for t in _latents(h, w, dtype, device)]
    grads = [torch.randn_like(inputs[0]) for _ in range(2)]
    # forward: 3 read, 2 written; backward: 3 inputs + 2 gradients read, 3 gradients written
    return Case(name, partial(dispatch.quantize_train, **BOUNDS),
                partial(quantize_train_reference, **BOUNDS), (*inputs, *grads),
                13 * _nbytes(grads[0]), check=False, step=_train_step)


def cases(size: tuple[int, int], dtype: torch.dtype, device: str) -> list[Case]:
    """Every kernel call of one image of `size`, named by the resolution of its input: g_s, h_s
    (in `dtype` as in training, in float64 as in coding), g_a's GDNs, quantize (coding) and
    quantize_train. No '/' in the names: Nsight Compute's --nvtx-include reads it as nesting."""
    h, w = size
    f64 = torch.float64
    return [
        _subpel_igdn("g_s.0 subpel_igdn 1:16", 4 * N, h // 16, w // 16, dtype, device),
        _subpel_igdn("g_s.1 subpel_igdn 1:8", 4 * N, h // 8, w // 8, dtype, device),
        _subpel_igdn("g_s.2 subpel_igdn 1:4", 4 * N, h // 4, w // 4, dtype, device),
        _subpel("g_s.3 subpel 1:2", 4 * 3, h // 2, w // 2, False, dtype, device),
        _subpel("h_s.0 subpel_lrelu 1:64", 4 * M, h // 64, w // 64, True, dtype, device),
        _subpel("h_s.1 subpel_lrelu 1:32", 4 * M * 3 // 2, h // 32, w // 32, True, dtype, device),
        _subpel("h_s.0 subpel_lrelu f64 1:64", 4 * M, h // 64, w // 64, True, f64, device),
        _subpel("h_s.1 subpel_lrelu f64 1:32", 4 * M * 3 // 2, h // 32, w // 32, True, f64, device),
        _gdn("g_a.1 gdn 1:2", h // 2, w // 2, dtype, device),
        _gdn("g_a.3 gdn 1:4", h // 4, w // 4, dtype, device),
        _gdn("g_a.5 gdn 1:8", h // 8, w // 8, dtype, device),
        _quantize("quantize f32/f64 1:16", h // 16, w // 16, device),
        _quantize_train("quantize_train fwd+bwd 1:16", h // 16, w // 16, dtype, device),
    ]


# --- CPU: the references under pytest-benchmark ------------------------------------------------

_NAMES = [c.name for c in cases((64, 64), torch.float32, "cpu")]


@pytest.mark.parametrize("name", _NAMES)
def test_reference_kodak(benchmark, name):
    torch.manual_seed(0)
    case = next(c for c in cases(SIZES["kodak"], torch.float32, "cpu") if c.name == name)
    benchmark(case.run, case.reference)


# --- GPU ---------------------------------------------------------------------------------------

def _check(case: Case) -> str:
    """The kernel against its reference on this GPU: 'exact', 'ok' or what differs."""
    got, want = case.run(case.kernel), case.run(case.reference)
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, r in zip(got, want, strict=True):
        if case.exact or not g.is_floating_point():
            if not torch.equal(g, r):
                return f"MISMATCH ({int((g != r).sum())} elements differ)"
        else:
            tol = TOL[r.dtype]
            err = float(((g.double() - r.double()).abs() / (r.double().abs() + 1)).max())
            if err > tol:
                return f"MISMATCH (error {err:.1e} > {tol:.0e})"
    return "exact" if case.exact else "ok"


def _do_bench_ms(fn: Callable) -> float:
    """Median milliseconds of fn on the GPU, L2 flushed between runs."""
    from triton.testing import do_bench

    return do_bench(fn, return_mode="median")


def _perf_counter_ms(fn: Callable) -> float:
    """--dry-run's timer: the milliseconds of one call (the interpreter is slow, and its figures
    are not results)."""
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


@dataclass
class Target:
    """Where the benchmark runs: the GPU, or the CPU under the interpreter for --dry-run."""

    name: str
    device: str
    sizes: dict[str, tuple[int, int]]
    timer: Callable[[Callable], float]
    copy_numel: int  # float32 elements of the copy that sets the bandwidth to compare with

    @staticmethod
    def gpu() -> Target:
        return Target(torch.cuda.get_device_name(), "cuda", SIZES, _do_bench_ms, 1 << 28)

    @staticmethod
    def dry_run() -> Target:
        return Target("CPU, Triton interpreter (dry run: not results)", "cpu", TOY,
                      _perf_counter_ms, 1 << 22)


def copy_bandwidth(target: Target) -> float:
    """GB/s of a plain copy on the target's device (read + write; 1 GiB on the GPU)."""
    src = torch.empty(target.copy_numel, device=target.device)
    dst = torch.empty_like(src)
    return 2 * _nbytes(src) / target.timer(lambda: dst.copy_(src)) / 1e6


def bench_gpu(dtype: torch.dtype, compile_: bool, target: Target) -> dict:
    torch.manual_seed(0)
    timer = target.timer
    copy = copy_bandwidth(target)
    rows = []
    print(f"{target.name}: copy {copy:.0f} GB/s, network dtype {dtype}")
    print(f"{'case':38} {'kernel us':>10} {'eager us':>10} {'compile us':>10} {'GB/s':>7} "
          f"{'%copy':>6} {'x eager':>8} {'x comp':>7}  check")
    for size_name, size in target.sizes.items():
        for case in cases(size, dtype, target.device):
            name = f"{size_name} {case.name}"
            check = _check(case) if case.check else "-"
            with stage(name):
                t = {"kernel": timer(lambda c=case: c.run(c.kernel)),
                     "eager": timer(lambda c=case: c.run(c.reference))}
                if compile_:
                    torch._dynamo.reset()  # a fresh compile per case, below any recompile limit
                    fn = torch.compile(case.reference, dynamic=False)
                    t["compile"] = timer(lambda c=case, f=fn: c.run(f))
            gbs = case.bytes / t["kernel"] / 1e6
            comp = t.get("compile", float("nan"))
            print(f"{name:38} {t['kernel'] * 1e3:10.1f} {t['eager'] * 1e3:10.1f} "
                  f"{comp * 1e3:10.1f} {gbs:7.0f} {100 * gbs / copy:6.1f} "
                  f"{t['eager'] / t['kernel']:8.2f} {comp / t['kernel']:7.2f}  {check}")
            rows.append({"case": name, "bytes": case.bytes, "ms": t, "gb_s": gbs,
                         "fraction_of_copy": gbs / copy, "check": check})
    return {"device": target.name, "copy_gb_s": copy, "dtype": str(dtype), "rows": rows}


def markdown(results: dict, command: str) -> str:
    """The GPU table for RESULTS.md: times in microseconds, GB/s and its share of the copy
    bandwidth, speed-ups over eager and torch.compile."""
    lines = [f"{time.strftime('%Y-%m-%d')}, {results['device']}, commit {commit()}, network dtype "
             f"{results['dtype']}, copy bandwidth {results['copy_gb_s']:.0f} GB/s: `{command}`", "",
             "| case | kernel us | eager us | compile us | GB/s | % of copy | x eager | x compile "
             "| check |", "|" + " --- |" * 9]
    for r in results["rows"]:
        t = r["ms"]
        comp = t.get("compile", float("nan"))
        lines.append(f"| {r['case']} | {1e3 * t['kernel']:.1f} | {1e3 * t['eager']:.1f} | "
                     f"{1e3 * comp:.1f} | {r['gb_s']:.0f} | {100 * r['fraction_of_copy']:.0f} | "
                     f"{t['eager'] / t['kernel']:.2f} | {comp / t['kernel']:.2f} | {r['check']} |")
    return "\n".join(lines)


def bench_codec(repeats: int = 5) -> None:
    """compress + decompress of a 1080p image with a random-weight N=128, M=192 model on the GPU;
    the stages appear as NVTX ranges (NIC_KERNELS=reference for the unfused run)."""
    from engine import Codec
    from engine.models import MeanScaleHyperprior, ModelConfig

    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(N=N, M=M)).eval().requires_grad_(False)
    codec = Codec(weights=model, device="cuda")
    x = F.interpolate(torch.rand(1, 3, 68, 120), size=(1080, 1920), mode="bicubic").clamp(0, 1)
    x = x.cuda()
    for i in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with stage(f"compress {i}"):
            data = codec.compress(x)
        torch.cuda.synchronize()
        middle = time.perf_counter()
        with stage(f"decompress {i}"):
            codec.decompress(data, device="cuda")
        torch.cuda.synchronize()
        end = time.perf_counter()
        print(f"run {i}: {len(data)} bytes, compress {1e3 * (middle - start):.1f} ms, "
              f"decompress {1e3 * (end - middle):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="dtype of the network kernels (h_s and quantize keep theirs)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--write", action="store_true", help="put the table in RESULTS.md")
    parser.add_argument("--codec", action="store_true", help="time the whole codec instead")
    parser.add_argument("--dry-run", action="store_true",
                        help="a test of this script on the CPU: toy size, kernels interpreted, "
                             "no torch.compile; its figures are not results")
    args = parser.parse_args()
    if args.dry_run:
        if args.write or args.codec:
            parser.error("--dry-run neither writes RESULTS.md nor times the codec")
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise SystemExit("--dry-run runs the kernels under the interpreter: TRITON_INTERPRET=1")
        os.environ["NIC_KERNELS"] = "triton"  # on CPU tensors too
        target = Target.dry_run()
    elif not torch.cuda.is_available():
        raise SystemExit("the GPU benchmarks need CUDA; on CPU run the pytest-benchmark form")
    elif args.codec:
        bench_codec()
        return
    else:
        target = Target.gpu()
    results = bench_gpu(getattr(torch, args.dtype), not (args.no_compile or args.dry_run), target)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.write:
        command = " ".join(["python benchmarks/bench_kernels.py", *sys.argv[1:]])
        write_section("gpu_kernels", "Triton kernels (GPU)", markdown(results, command))


if __name__ == "__main__":
    main()
