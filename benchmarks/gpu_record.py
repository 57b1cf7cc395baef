"""The record of a GPU session: every measurement as one JSON line, appended the moment it is
made, so that a step cut off by its time limit still leaves the rows it finished.

    python benchmarks/gpu_record.py machine     # record (and print) what this machine is
    python benchmarks/gpu_record.py backend     # the coder for CUDA networks (builds it)

`NICENGINE_RECORD` names the file (benchmarks/gpu_session.sh sets it to $OUT/results.jsonl);
unset, nothing is written. `NICENGINE_COMMIT` names the commit where the checkout has no .git
(the device machine's copy). Each row has a "step"; benchmarks/gpu_results.py turns a record into
RESULTS.md sections.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import results_md  # noqa: E402

RECORD = "NICENGINE_RECORD"
DRY_RUN = "NICENGINE_DRY_RUN"  # set by gpu_session.sh --dry-run: the figures are not results


def record(step: str, row: dict) -> None:
    """Append {"step": step, **row} to the session record, if there is one."""
    path = os.environ.get(RECORD)
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")


def read(path: str | Path) -> list[dict]:
    """The rows of a record; a last line cut off by a kill is dropped."""
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _cpu() -> tuple[str, str]:
    """(the CPU's model name, its AVX-512 and AMX support) from /proc/cpuinfo."""
    name, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    simd = [label for flag, label in (("avx512f", "AVX-512"), ("amx_tile", "AMX"))
            if flag in flags]
    return name, ", ".join(simd) or "no AVX-512 or AMX"


def machine() -> dict:
    """What the figures ran on, and when."""
    cpu, simd = _cpu()
    row = {"date": str(date.today()), "commit": results_md.commit(), "cpu": cpu, "simd": simd,
           "cores": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "python": platform.python_version(), "dry_run": os.environ.get(DRY_RUN) == "1",
           "gpu": None}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        row.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30),
                   sms=props.multi_processor_count)
    return row


def describe(m: dict) -> str:
    """One line for a RESULTS.md section: date, commit, GPU, CPU, software."""
    gpu = f"{m['gpu']} ({m['gpu_memory_gib']} GiB, {m['sms']} SMs)" if m["gpu"] else "no GPU"
    text = (f"{m['date']}, commit {m['commit']}, {gpu}, CPU {m['cpu']} ({m['cores']} cores, "
            f"{m['simd']}), Python {m['python']}, torch {m['torch']}")
    text += f" (CUDA {m['cuda']})" if m["cuda"] else ""
    return text + (" [DRY RUN on the CPU: not results]" if m["dry_run"] else "")


def backend() -> bool:
    """Record which entropy coder runs for networks on CUDA (the first call builds the CUDA
    coder); False when a GPU is here and the CUDA coder is not."""
    from engine import Codec

    which = Codec().coder_backend("cuda")
    record("backend", {"coder": which})
    print(f"entropy coder for CUDA networks: {which}")
    return which == "cuda" or not torch.cuda.is_available()


def main() -> None:
    if sys.argv[1:] == ["machine"]:
        row = machine()
        record("machine", row)
        print(describe(row))
    elif sys.argv[1:] == ["backend"]:
        raise SystemExit(0 if backend() else 1)
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
