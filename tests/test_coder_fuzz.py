"""The coders' differential fuzz target (tests/fuzz/coder_fuzz.cpp) under AddressSanitizer and
UBSan, for a few seconds of random inputs: the CPU coder and the CUDA coder's warp algorithm
(run on the host) must agree on every input and never touch memory they do not own.
`make fuzz` runs the same target for longer, coverage-guided where libFuzzer is installed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parent / "fuzz" / "fuzz.sh"


def test_random_inputs_under_the_sanitizers():
    run = subprocess.run(
        ["bash", str(FUZZ), "--standalone", "--iterations", "30000", "--seed", "1"],
        capture_output=True, text=True, timeout=600)
    if run.returncode == 77:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stdout + run.stderr
    summary = re.search(r"30000 inputs .* no failure\. Rejected in the header (\d+), in a segment "
                        r"(\d+), at the end (\d+); round trips (\d+); damage not noticed (\d+)",
                        run.stdout)
    assert summary, run.stdout + run.stderr
    # The inputs reach every outcome, so the decoders were exercised past their headers.
    header, segment, end, round_trips, unnoticed = map(int, summary.groups())
    assert header + segment + end + round_trips + unnoticed == 30000
    assert min(segment, end, round_trips) >= 20
