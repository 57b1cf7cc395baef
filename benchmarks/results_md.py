"""Writing measured figures into benchmarks/RESULTS.md: one marker-delimited section per script,
replaced when the script runs again, and the commit and machine the figures belong to."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"


def commit() -> str:
    """The commit figures belong to: NICENGINE_COMMIT where it is set (a device run's copy of
    the tree has no .git), else the short hash of HEAD, marked when the working tree has
    uncommitted changes."""
    if os.environ.get("NICENGINE_COMMIT"):
        return os.environ["NICENGINE_COMMIT"]

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def write_section(name: str, title: str, text: str) -> None:
    """Put `text` between <!-- name:start --> and <!-- name:end --> under a `## title`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n"
    block = f"{start}\n{text}\n{end}"
    if start in body:
        body = body[: body.index(start)] + block + body[body.index(end) + len(end) :]
    else:
        body = body.rstrip() + f"\n\n## {title}\n\n" + block + "\n"
    RESULTS_MD.write_text(body)
    print(f"wrote section {name} of {RESULTS_MD}")


ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS",
              "NIC_RANS_SCALAR", "NIC_INT_GEMM_AVX2")  # what benchmarks/without_avx512.sh sets


def isa_limited() -> bool:
    """Whether this process runs under benchmarks/without_avx512.sh's limits."""
    return any(os.environ.get(k) for k in ISA_LIMITS)


def cpu() -> str:
    """The CPU's model name, its cores, whether it has AVX-512 (and its bfloat16 dot products)
    and AMX, and the instruction-set limits this process runs under, if any."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.processor() or platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines()
                  if line.startswith("flags")), [])
    has = {"AVX-512": "avx512f" in flags, "AVX512_BF16": "avx512_bf16" in flags,
           "AMX": "amx_tile" in flags}
    text = f"{name}, {os.cpu_count()} cores, " + ", ".join(
        f"{k} {'yes' if v else 'no'}" for k, v in has.items())
    limits = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    if limits:
        text += f" (held to AVX2 by {' '.join(limits)}: benchmarks/without_avx512.sh)"
    return text


def machine(device: str | torch.device) -> str:
    """What ran the figures: the GPU's name, or the CPU and torch's thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu()}, {torch.get_num_threads()} threads"
