"""benchmarks/gpu_session.sh, the one device call that runs every GPU check and benchmark: its
syntax, its time plan, and a short dry run on this CPU (every step at toy sizes, the Triton
interpreter and the emulated CUDA coder standing in), which must write every file the device
run writes and a record that benchmarks/gpu_results.py turns into RESULTS.md sections.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED, needs_kodak

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"
BUDGET = 480  # seconds of work in one device call (the limit)
STEPS = ["setup", "build", "tests", "kernels", "coder", "pipeline", "context", "cross", "train",
         "sanitizer", "suite"]  # in priority order

sys.path.insert(0, str(ROOT / "benchmarks"))


def session(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "PY": sys.executable, **env}, timeout=900)


def plan() -> tuple[dict[str, int], int, list[str]]:
    """(limit of each step, the total, the outputs) as --plan prints them."""
    out = session("--plan").stdout
    limits = dict(re.findall(r"^(\w+)\s+(\d+)s ", out, re.M))
    total = int(limits.pop("total"))
    outputs = re.search(r"^outputs: (.*)$", out, re.M).group(1).split()
    return {k: int(v) for k, v in limits.items()}, total, outputs


def test_the_script_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_plan_fits_one_device_call():
    limits, total, outputs = plan()
    assert list(limits) == STEPS
    assert sum(limits.values()) == total <= BUDGET
    assert "results.jsonl" in outputs and "log.txt" in outputs


@needs_kodak
@pytest.mark.skipif(not (SHARED / "data" / "train").is_dir(),
                    reason="needs ../shared/data/train (present in CI)")
@pytest.mark.slow
def test_a_short_dry_run_writes_every_output(tmp_path, monkeypatch):
    import gpu_record
    import gpu_results
    import results_md

    result = session("--dry-run", OUT=str(tmp_path), GPU_SESSION_SHORT="1")
    log = (tmp_path / "log.txt").read_text() if (tmp_path / "log.txt").exists() else ""
    assert result.returncode == 0, result.stdout + result.stderr + log[-4000:]
    _, _, outputs = plan()
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 0, name
    rows = gpu_record.read(tmp_path / "results.jsonl")
    ran = {r["name"]: r["rc"] for r in rows if r["step"] == "session"}
    assert ran == dict.fromkeys(STEPS, 0)
    cross = [r for r in rows if r["step"] == "cross_device"]
    assert cross and all(r["correct"] == r["images"] for r in cross)
    assert any(r["step"] == "pytest" for r in rows)

    where, sections = gpu_results.sections(tmp_path)
    assert where["dry_run"]
    for name, _, text, why in sections:
        assert text, f"{name}: {why}"
    # A dry run's figures never reach RESULTS.md (here a copy, should the refusal break).
    monkeypatch.setattr(results_md, "RESULTS_MD", tmp_path / "RESULTS.md")
    monkeypatch.setattr(sys, "argv", ["gpu_results.py", str(tmp_path), "--write"])
    with pytest.raises(SystemExit, match="dry run"):
        gpu_results.main()
    assert not (tmp_path / "RESULTS.md").exists()
