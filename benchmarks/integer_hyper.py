"""The integer hyper-decoder on Kodak: what it costs in rate, and whether decoding depends on the
machine.

    python benchmarks/integer_hyper.py rd [--limit N] [--write]
    python benchmarks/integer_hyper.py cross [--limit N] [--write]

rd: every shipped level coded twice through the public API, with h_s in float64 (the weights
alone) and with the integer hyper-decoder (their companion file): mean bpp and PSNR, BD-rate of
integer against float64, and compress / decompress time of both paths on one image, same run.

cross: every Kodak image at every level encoded in one configuration (the machine's ISA, all
threads, the images of one size in one batch), then decoded in fresh processes under others
(the generic ISA with one thread and one image at a time; AVX2; the Triton interpreter for the
integer convolutions). Each decoder recomputes h_s's integers from the encoder's z_hat and
compares their hash; it also decodes every stream and compares the pixels with the encoder's
decoding (a desynchronised stream decodes to garbage). For reference, the float64 h_s's table
indexes are compared the same way.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, cpu, write_section  # noqa: E402
from timing import best_of  # noqa: E402

TRITON_IMAGES = 2  # the Triton interpreter decoder's images (each level)
DECODERS = {  # name: environment of the decoding process
    "generic ISA, 1 thread, batch 1": {"ATEN_CPU_CAPABILITY": "default",
                                        "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1"},
    "AVX2, 2 threads, batch 4": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                 "OMP_NUM_THREADS": "2"},
    "Triton interpreter (integer convolutions), 1 thread": {
        "NIC_KERNELS": "triton", "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"},
}


def models() -> dict[int, torch.nn.Module]:
    from engine import zoo

    return {q: zoo.load("msh", q) for q in zoo.shipped_qualities("msh")}


def float_only(model):
    """The same weights without their integer hyper-decoder: h_s in float64."""
    other = copy.deepcopy(model)
    other.attach_integer_hyper(None)
    other.info = model.info
    return other


def images(limit: int | None) -> list[torch.Tensor]:
    """Kodak images, (3, H, W) each."""
    from engine.images import list_images, to_batch

    return [to_batch(p)[0] for p in list_images(KODAK)[:limit]]


def bpp_psnr(codec, x: torch.Tensor) -> tuple[float, float]:
    from engine.metrics import psnr

    data = codec.compress(x)
    return 8 * len(data) / (x.shape[1] * x.shape[2]), psnr(codec.decompress(data), x)


def rd(limit: int | None) -> dict:
    from engine import Codec
    from engine.bjontegaard import bd_rate

    xs = images(limit)
    curves: dict[str, list[tuple[float, float]]] = {"float64": [], "integer": []}
    times: dict[str, float] = {}
    for q, model in models().items():
        for path, m in (("float64", float_only(model)), ("integer", model)):
            codec = Codec(weights=m, device="cpu")
            rows = [bpp_psnr(codec, x) for x in xs]
            curves[path].append(tuple(float(np.mean(v)) for v in zip(*rows, strict=True)))
            if q == 3:
                data = codec.compress(xs[0])
                times[f"{path}_compress"] = best_of(lambda c=codec: c.compress(xs[0]), 5)
                times[f"{path}_decompress"] = best_of(lambda c=codec, d=data: c.decompress(d), 5)
    (fb, fp), (ib, ip) = (list(zip(*curves[k], strict=True)) for k in ("float64", "integer"))
    bd = bd_rate(fb, fp, ib, ip)
    return {"curves": curves, "bd_rate": bd, "times": times, "images": len(xs)}


def _hyper_digest(model, z_hat: torch.Tensor, integer: bool) -> str:
    """Hash of what decides the tables: the integer scales and means, or the float64 path's
    scale indexes."""
    scales, means, bounds = model.hyper_decode(z_hat, integer)
    if integer:
        data = scales.numpy().tobytes() + means.numpy().tobytes()
    else:
        data = model.entropy_y.indexes(scales, bounds).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def encode(folder: Path, limit: int | None) -> None:
    """The encoding configuration: this process's defaults, images of one size in one batch."""
    from engine import Codec

    xs = images(limit)
    record = []
    for q, model in models().items():
        codec = Codec(weights=model, device="cpu")
        for shape in {tuple(x.shape) for x in xs}:
            idx = [i for i, x in enumerate(xs) if tuple(x.shape) == shape]
            streams = codec.compress_batch([xs[i] for i in idx])
            for i, data in zip(idx, streams, strict=True):
                name = f"q{q}-{i:02d}"
                (folder / f"{name}.nic").write_bytes(data)
                z = model.analyze(model.pad(xs[i][None]))[1]
                z_hat = model.entropy_z.dequantize(model.entropy_z.symbols(z))
                torch.save(z_hat, folder / f"{name}.z.pt")
                pixels = codec.decompress(data)
                np.save(folder / f"{name}.npy", (pixels * 255).round().byte().numpy())
                record.append({"name": name, "q": q,
                               "integer": _hyper_digest(model, z_hat, True),
                               "float64": _hyper_digest(model, z_hat, False)})
    (folder / "encoded.json").write_text(json.dumps(record))


def decode(folder: Path, batch: int, full: bool, images: int | None) -> None:
    """A decoding configuration (set by the environment): prints its counts as JSON. `images`:
    only the streams of the first N images."""
    from engine import Codec

    record = json.loads((folder / "encoded.json").read_text())
    record = [r for r in record if images is None or int(r["name"].split("-")[1]) < images]
    by_level = models()
    counts = {"streams": len(record), "integer_same": 0, "float64_same": 0, "decoded": 0,
              "max_pixel_diff": 0}
    for q, model in by_level.items():
        rows = [r for r in record if r["q"] == q]
        for r in rows:
            z_hat = torch.load(folder / f"{r['name']}.z.pt")
            counts["integer_same"] += _hyper_digest(model, z_hat, True) == r["integer"]
            counts["float64_same"] += _hyper_digest(model, z_hat, False) == r["float64"]
        if not full:
            continue
        codec = Codec(weights=model, device="cpu")
        for k in range(0, len(rows), batch):
            group = rows[k : k + batch]
            outs = codec.decompress_batch([(folder / f"{r['name']}.nic").read_bytes()
                                           for r in group])
            for r, x in zip(group, outs, strict=True):
                ref = np.load(folder / f"{r['name']}.npy").astype(int)
                diff = int(np.abs((x * 255).round().byte().numpy().astype(int) - ref).max())
                counts["decoded"] += 1
                counts["max_pixel_diff"] = max(counts["max_pixel_diff"], diff)
    print(json.dumps(counts))


def cross(limit: int | None) -> dict:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        encode(Path(tmp), limit)
        for name, env in DECODERS.items():
            # The interpreter runs h_s only, on the first TRITON_IMAGES images: about 30 s each.
            full = "Triton" not in name
            batch = 4 if "batch 4" in name else 1
            images = "all" if full else str(TRITON_IMAGES)
            out = subprocess.run(
                [sys.executable, __file__, "_decode", tmp, str(batch), str(int(full)), images],
                env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    return results


def _header(command: str) -> str:
    return (f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}. "
            f"Command: `{command}`. Models: the shipped msh-q1..q6 and their integer "
            f"hyper-decoders (docs/TRAINING.md).")


def report_rd(r: dict, command: str) -> str:
    lines = [_header(command) + f" Images: {r['images']} from Kodak.", "",
             "| level | bpp, float64 h_s | PSNR | bpp, integer h_s | PSNR | rate change |",
             "| --- | --- | --- | --- | --- | --- |"]
    for q, (f, i) in enumerate(zip(r["curves"]["float64"], r["curves"]["integer"],
                                   strict=True), 1):
        lines.append(f"| {q} | {f[0]:.4f} | {f[1]:.3f} | {i[0]:.4f} | {i[1]:.3f} | "
                     f"{100 * (i[0] / f[0] - 1):+.3f} % |")
    t = r["times"]
    lines += ["", f"BD-rate of the integer path against float64 h_s: **{r['bd_rate']:+.3f} %**.",
              "", "| one Kodak image, level 3 (s) | float64 h_s | integer h_s | ratio |",
              "| --- | --- | --- | --- |"]
    for op in ("compress", "decompress"):
        f, i = t[f"float64_{op}"], t[f"integer_{op}"]
        lines.append(f"| {op} | {f:.3f} | {i:.3f} | {f / i:.2f}x |")
    return "\n".join(lines)


def report_cross(r: dict, command: str) -> str:
    lines = [_header(command) + " Encoder: this machine's ISA, its threads, the images of one "
             "size in one batch.", "",
             "| decoder | streams | integer h_s identical | float64 scale indexes identical | "
             "decoded | max pixel difference |", "| --- | --- | --- | --- | --- | --- |"]
    for name, c in r.items():
        decoded = f"{c['decoded']}" if c["decoded"] else "not run"
        diff = f"{c['max_pixel_diff']}" if c["decoded"] else "-"
        lines.append(f"| {name} | {c['streams']} | {c['integer_same']} | {c['float64_same']} | "
                     f"{decoded} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["_decode"]:
        images = None if sys.argv[5] == "all" else int(sys.argv[5])
        decode(Path(sys.argv[2]), int(sys.argv[3]), bool(int(sys.argv[4])), images)
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("rd", "cross"))
    p.add_argument("--limit", type=int, default=None, help="only the first N Kodak images")
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    command = "python benchmarks/integer_hyper.py " + " ".join(sys.argv[1:])
    if a.what == "rd":
        text = report_rd(rd(a.limit), command)
    else:
        text = report_cross(cross(a.limit), command)
    print(text)
    if a.write:
        title = {"rd": "Kodak rate cost and speed", "cross": "cross-configuration decoding"}
        write_section(f"integer_hyper_{a.what}", f"Integer hyper-decoder: {title[a.what]}", text)


if __name__ == "__main__":
    main()
