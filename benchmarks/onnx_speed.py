"""g_a and g_s in ONNX Runtime against torch (float32, the engine's CPU path) on a Kodak image
(768x512), at 1 and 2 threads: the shipped default model and a random N=128, M=192 mean-scale
hyperprior; and, for the shipped model, ONNX Runtime int8 (static QDQ, per-channel weights,
convolutions only, calibrated on other Kodak images) with the PSNR change of g_s's output.

    python benchmarks/onnx_speed.py [--repeat 5] [--write]

torch runs g_a.analyze and g_s.synthesize as the codec does (NNPACK's Winograd convolutions in
g_s where torch has NNPACK); ONNX Runtime runs the files `python -m engine.zoo export-onnx`
writes, all graph optimisations on. Times: the fastest of --repeat calls after a warm-up, the
calls of torch and ONNX Runtime interleaved, so that other load on the machine meets both alike.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import onnxruntime as ort  # noqa: E402
from onnxruntime import quantization as q  # noqa: E402
from results_md import commit, cpu, write_section  # noqa: E402

from engine.images import to_batch  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from engine.models import MeanScaleHyperprior, ModelConfig  # noqa: E402
from engine.onnx_export import export_onnx  # noqa: E402
from engine.zoo import load  # noqa: E402

THREADS = (1, 2)
CALIBRATION = ("kodim01.png", "kodim05.png", "kodim13.png")  # landscape, 768x512 like kodim23


def best_interleaved(calls: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Seconds of the fastest of `repeat` calls of each, after one warm-up call each; one call
    of each in turn."""
    for call in calls.values():
        call()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeat):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _Feed(q.CalibrationDataReader):
    """Calibration inputs for one network: one array per image."""

    def __init__(self, name: str, arrays: list[np.ndarray]) -> None:
        self.items = iter([{name: a} for a in arrays])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def int8(src: Path, dst: Path, name: str, arrays: list[np.ndarray]) -> None:
    q.quantize_static(str(src), str(dst), _Feed(name, arrays), quant_format=q.QuantFormat.QDQ,
                      per_channel=True, op_types_to_quantize=["Conv"],
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)


def measure(model: MeanScaleHyperprior, folder: Path, x: torch.Tensor, repeat: int,
            calibration: list[torch.Tensor] | None) -> list[dict]:
    """Rows {network, threads, torch, ort, ort_int8 (s)}; with calibration images, int8 too."""
    export_onnx(model, model.info.quality if model.info else 0.0, folder)
    with torch.inference_mode():
        y_hat = model.decoder_latents(model.analyze(x))[0]
        inputs = {"g_a": ("x", x), "g_s": ("y_hat", y_hat)}
        torch_fn = {"g_a": lambda: model.g_a.analyze(x),
                    "g_s": lambda: model.g_s.synthesize(y_hat)}
        if calibration is not None:
            samples = {"g_a": [c.numpy() for c in calibration],
                       "g_s": [model.decoder_latents(model.analyze(c))[0].numpy()
                               for c in calibration]}
            for net in inputs:
                int8(folder / f"{net}.onnx", folder / f"{net}.int8.onnx", inputs[net][0],
                     samples[net])
    rows = []
    for threads in THREADS:
        torch.set_num_threads(threads)
        for net, (name, value) in inputs.items():
            feed = {name: value.numpy()}
            s = session(folder / f"{net}.onnx", threads)
            calls = {"torch": torch_fn[net], "ort": lambda s=s, feed=feed: s.run(None, feed)}
            if calibration is not None:
                s8 = session(folder / f"{net}.int8.onnx", threads)
                calls["ort_int8"] = lambda s=s8, feed=feed: s.run(None, feed)
            with torch.inference_mode():
                row = {"network": net, "threads": threads, **best_interleaved(calls, repeat)}
            if calibration is not None and net == "g_s":
                row["psnr"] = psnr_change(s, s8, feed, x)
            rows.append(row)
            print(row, flush=True)
    return rows


def psnr_change(fp32: ort.InferenceSession, int8: ort.InferenceSession, feed: dict,
                x: torch.Tensor) -> tuple[float, float]:
    """(PSNR of the float32 ORT g_s, of the int8 one) against the original image, dB."""
    def decoded(s: ort.InferenceSession) -> torch.Tensor:
        return torch.from_numpy(s.run(None, feed)[0]).clamp(0, 1)

    return float(psnr(x, decoded(fp32))), float(psnr(x, decoded(int8)))


def report(results: dict[str, list[dict]], command: str) -> str:
    lines = [f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}, "
             f"onnxruntime {ort.__version__}. Command: `{command}`. kodim23 (768x512), float32 "
             "unless marked; the fastest of the repeats; speed-up = torch / ORT; load average "
             f"{os.getloadavg()[0]:.1f} at the end.", "",
             "| model | network | threads | torch (ms) | ORT (ms) | speed-up | ORT int8 (ms) | "
             "int8 speed-up |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for name, rows in results.items():
        for r in rows:
            i8 = r.get("ort_int8")
            lines.append(f"| {name} | {r['network']} | {r['threads']} | {1e3 * r['torch']:.0f} | "
                         f"{1e3 * r['ort']:.0f} | {r['torch'] / r['ort']:.2f}x | "
                         + (f"{1e3 * i8:.0f} | {r['torch'] / i8:.2f}x |" if i8 else "- | - |"))
            if "psnr" in r and r["threads"] == THREADS[0]:
                fp, i8p = r["psnr"]
                notes.append(f"{name}: g_s output PSNR {fp:.2f} dB in float32, {i8p:.2f} dB "
                             f"with int8 g_s ({i8p - fp:+.2f} dB).")
    return "\n".join(lines + [""] + notes)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--write", action="store_true", help="write the section of RESULTS.md")
    a = p.parse_args()
    x = to_batch(KODAK / "kodim23.png")
    calibration = [to_batch(KODAK / f) for f in CALIBRATION]
    torch.manual_seed(0)
    models = {"msh q3 (N=64, M=128)": (load("msh", 3), calibration),
              "random N=128, M=192": (MeanScaleHyperprior(ModelConfig(128, 192)).eval()
                                      .requires_grad_(False), None)}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (model, cal)) in enumerate(models.items()):
            results[name] = measure(model, Path(tmp) / str(i), x, a.repeat, cal)
    text = report(results, "python benchmarks/onnx_speed.py " + " ".join(sys.argv[1:]))
    print(text)
    if a.write:
        write_section("onnx_speed", "ONNX Runtime against torch: g_a and g_s (CPU)", text)


if __name__ == "__main__":
    main()
