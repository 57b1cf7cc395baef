"""pytest with every test's outcome added to the session record (benchmarks/gpu_record.py) as
soon as the test ends, so that a run cut off by its time limit still counts what ran.

    python benchmarks/gpu_tests.py RUN [pytest arguments]

The rows are {"step": "pytest", "run": RUN, "test": ..., "outcome": ...}; RUN names the run
("tests", "suite", "sanitizer-memcheck", ...). The exit status is pytest's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gpu_record import record  # noqa: E402


class Recorder:
    """A pytest plugin: one row per test (its call, or the setup that failed or skipped it)."""

    def __init__(self, run: str) -> None:
        self.run = run

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or report.outcome != "passed":
            message = ""
            if report.failed:
                message = report.longreprtext.strip().splitlines()[-1][:200]
            elif report.skipped and isinstance(report.longrepr, tuple):
                message = report.longrepr[2]
            record("pytest", {"run": self.run, "test": report.nodeid, "when": report.when,
                               "outcome": report.outcome, "seconds": round(report.duration, 3),
                               "message": message})


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__.split("\n\n")[1])
    run, args = sys.argv[1], sys.argv[2:]
    raise SystemExit(pytest.main(args, plugins=[Recorder(run)]))


if __name__ == "__main__":
    main()
