"""A GPU session's files (the $OUT of benchmarks/gpu_session.sh) as benchmarks/RESULTS.md sections.

    python benchmarks/gpu_results.py DIR            # print the sections
    python benchmarks/gpu_results.py DIR --write    # put them into benchmarks/RESULTS.md

DIR holds results.jsonl (benchmarks/gpu_record.py), log.txt, kernels.json, train.csv and
train-int8.safetensors. A section whose step left no figures is left as it is (an earlier
session's figures stay), with a note saying why. --write refuses a dry run's record: its
figures are not results.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

from safetensors import safe_open

sys.path.insert(0, str(Path(__file__).parent))
import bench_gpu_coder  # noqa: E402
import gpu_pipeline  # noqa: E402
from gpu_record import describe, read  # noqa: E402
from results_md import write_section  # noqa: E402

COMMAND = "bash benchmarks/gpu_session.sh"


def by_step(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["step"], []).append(r)
    return out


def outcome(rows: list[dict]) -> str:
    """'12 passed, 1 failed, 3 skipped' of a test step's rows."""
    counts = Counter(r["outcome"] for r in rows)
    return ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "skipped") if counts[k])


def session(steps: dict[str, list[dict]], where: dict) -> str:
    backend = steps.get("backend", [{}])[-1].get("coder", "not reached")
    lines = [f"{describe(where)}. Command: `{COMMAND}` (one device call), then `python "
             f"benchmarks/gpu_results.py DIR --write`. Entropy coder for CUDA networks: "
             f"{backend}.", "", "| step | limit (s) | took (s) | exit | tests |",
             "| --- | --- | --- | --- | --- |"]
    runs: dict[str, list[dict]] = {}  # pytest rows (benchmarks/gpu_tests.py) by run
    for r in steps.get("pytest", []):
        runs.setdefault(r["run"], []).append(r)
    for s in steps.get("session", []):
        # a step's runs: "tests" of the tests step, "sanitizer-memcheck" of the sanitizer step
        mine = [k for k in runs if k == s["name"] or k.startswith(s["name"] + "-")]
        cells = "; ".join(f"{k}: {outcome(runs[k])}" for k in mine) or "-"
        exit_ = f"{s['rc']}" + (" (out of time)" if s["rc"] in (124, 137) else "")
        lines.append(f"| {s['name']} | {s['limit_s']} | {s['seconds']} | {exit_} | {cells} |")
    meaning = {99: " (errors found: see log.txt)", 124: " (out of time)", 127: " (not found)"}
    tools = [f"{t['tool']} exit {t['rc']}{meaning.get(t['rc'], '')}"
             for t in steps.get("sanitizer_tool", [])]
    if tools:
        lines += ["", f"compute-sanitizer ({steps['sanitizer_tool'][0]['sanitizer']}) over "
                  "tests/test_coder_cuda.py at small sizes: " + ", ".join(tools) + "."]
    failures = [r for r in steps.get("pytest", []) if r["outcome"] == "failed"]
    if failures:
        lines += ["", "Failed:", ""]
        lines += [f"- `{r['test']}` ({r['run']}): {r['message']}" for r in failures[:30]]
    return "\n".join(lines)


def not_measured(steps: dict[str, list[dict]], name: str) -> str:
    s = next((s for s in steps.get("session", []) if s["name"] == name), None)
    return ("its step was not reached" if s is None
            else f"its step ended with exit {s['rc']} after {s['seconds']} s; see log.txt")


def kernels(folder: Path) -> str | None:
    path = folder / "kernels.json"
    if not path.exists():
        return None
    import bench_kernels

    return bench_kernels.markdown(json.loads(path.read_text()), COMMAND)


def train(folder: Path, steps: dict[str, list[dict]], where: dict) -> str | None:
    """The training run's rates (train.csv: engine.train's log.csv) and its exported config."""
    log = folder / "train.csv"
    if not log.exists():
        return None
    with open(log) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    rate = statistics.median(float(r["steps_per_s"]) for r in rows[1:] or rows)
    weights = folder / "train-int8.safetensors"
    config, exported = {}, "none came back"
    if weights.exists():
        with safe_open(str(weights), "pt") as f:
            config = json.loads(f.metadata()["info"]).get("train_config", {})
        exported = f"`train-int8.safetensors`, {weights.stat().st_size / 2**20:.1f} MiB"
    command = steps.get("train", [{}])[-1].get("command", "python -m engine.train ...")
    last = rows[-1]
    return "\n".join([
        f"{describe(where)}. Command: `{COMMAND}`, its train step: `{command}` (a slice of the "
        "training pool), then `python -m engine.train export RUN OUT --storage int8`. Model "
        f"{config.get('kind', '?')} (checkerboard {config.get('checkerboard', '?')}), N="
        f"{config.get('N', '?')}, M={config.get('M', '?')}, batch {config.get('batch', '?')} of "
        f"{config.get('crop', '?')}x{config.get('crop', '?')}, amp {config.get('amp', '?')}; "
        "image loading included; steps/s: the median of the rates engine.train logs every 10 "
        "steps, the first left out (warm-up).", "",
        "| steps | steps/s | images/s | last loss | last bpp | last PSNR | checkpoint |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {last['step']} | {rate:.2f} | {rate * config.get('batch', float('nan')):.1f} | "
        f"{last['loss']} | {last['bpp']} | {last['psnr']} | {exported} |"])


def sections(folder: Path) -> tuple[dict, list[tuple[str, str, str | None, str]]]:
    """(the machine row, [(marker name, title, text, why)]): text None when no figures came
    back, and then `why` says why."""
    steps = by_step(read(folder / "results.jsonl"))
    if "machine" not in steps:
        raise SystemExit(f"{folder}/results.jsonl has no machine row: not a session record")
    where = steps["machine"][0]

    def rows_of(step: str, render) -> str | None:
        return render(steps[step], where) if step in steps else None

    made = [
        ("gpu_session", "GPU session", session(steps, where), "setup"),
        ("gpu_kernels", "Triton kernels (GPU)", kernels(folder), "kernels"),
        ("gpu_coder", "GPU entropy coder", rows_of(bench_gpu_coder.STEP, bench_gpu_coder.table),
         "coder"),
        ("gpu_pipeline", "End to end on the GPU",
         rows_of(gpu_pipeline.SPEED, gpu_pipeline.speed_table), "pipeline"),
        ("gpu_context", "Joint autoregressive coding on the GPU",
         rows_of(gpu_pipeline.CONTEXT, gpu_pipeline.context_table), "context"),
        ("cross_device", "Cross-device decoding (GPU <-> CPU)",
         rows_of(gpu_pipeline.CROSS, gpu_pipeline.cross_table), "cross"),
        ("train_gpu", "Training run (GPU)", train(folder, steps, where), "train"),
    ]
    return where, [(name, title, text, "" if text else not_measured(steps, step))
                   for name, title, text, step in made]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    where, made = sections(a.folder)
    if a.write and where["dry_run"]:
        raise SystemExit("a dry run's record: its figures are not results, nothing written")
    for name, title, text, why in made:
        if text is None:  # an earlier session's figures, if any, stay
            print(f"{title}: no figures ({why})")
        elif a.write:
            write_section(name, title, text)
        else:
            print(f"## {title}\n\n<!-- {name} -->\n{text}\n")


if __name__ == "__main__":
    main()
