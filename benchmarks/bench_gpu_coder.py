"""The GPU rANS coder against the CPU coder and CompressAI's, on the same symbols.

    python benchmarks/bench_gpu_coder.py [--repeat 5] [--quick] [--write]

Latents like a trained hyperprior's y: M=192 channels at Kodak size (32 x 48, a 768x512 image)
and 1080p size (68 x 120), Gaussian symbols at scales log-uniform over [0.11, 20], coded with
the engine's Gaussian tables (`gaussian_tables()`), each image cut into streams of about 16 KB
as `Codec` cuts it. Batches of 1 and 16 images of each size, and 16 images of sizes from Kodak's
to 1080p's. Figures are symbols per second, best of --repeat:

* GPU encode: symbols on the GPU -> compacted streams on the GPU (`coder.encode`);
* GPU decode: streams on the GPU -> symbols on the GPU: open, one segment per stream, finish,
  with the status checks (`coder.Decoder`); "kernel": the decode launch alone (CUDA events);
* the CPU coder (`engine._rans`) on all threads and on one;
* CompressAI's coder (one thread, one string per image), when it imports (see
  benchmarks/vs_compressai.py for its installation).

Without a GPU only the CPU side is measured. `--write` (on a GPU) puts the table into
benchmarks/RESULTS.md between the markers <!-- gpu_coder:start --> and <!-- gpu_coder:end -->.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, write_section  # noqa: E402
from timing import best_of  # noqa: E402

from engine import _rans, coder, format  # noqa: E402
from engine.entropy.gaussian import SCALES, gaussian_tables  # noqa: E402

KODAK, HD = (32, 48), (68, 120)
M = 192
STREAM_BYTES = 16384  # Codec's default target size of one stream


def batches(quick: bool) -> list[tuple[str, list[tuple[int, int]]]]:
    mixed = [(round(KODAK[0] + (HD[0] - KODAK[0]) * i / 15),
              round(KODAK[1] + (HD[1] - KODAK[1]) * i / 15)) for i in range(16)]
    if quick:
        return [("Kodak x1", [KODAK])]
    return [("Kodak x1", [KODAK]), ("Kodak x16", [KODAK] * 16), ("1080p x1", [HD]),
            ("1080p x16", [HD] * 16), ("Kodak..1080p x16", mixed)]


def image_latents(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, table indexes) of one image's y, flattened."""
    n = M * h * w
    scales = np.exp(rng.uniform(math.log(0.11), math.log(20.0), n))
    indexes = np.searchsorted(SCALES[:-1], scales).astype(np.int32)  # as scale_indexes()
    return np.round(rng.normal(0.0, scales)).astype(np.int32), indexes


def ideal_bits(values: np.ndarray, indexes: np.ndarray) -> float:
    t = gaussian_tables()
    s = values.astype(np.int64) - t.offsets[indexes]
    size = t.sizes[indexes]
    s = np.where((s < 0) | (s >= size - 1), size - 1, s)
    return float(np.sum(16 - np.log2(t.cdfs[indexes, s + 1] - t.cdfs[indexes, s])))


def streams_of(values: np.ndarray, indexes: np.ndarray) -> list[list[tuple]]:
    """One image's y cut into streams as `Codec._stream_count` cuts it (one segment each)."""
    by_size = round(ideal_bits(values, indexes) / 8 / STREAM_BYTES)
    n = int(max(1, min(by_size, values.size // 4096, format.MAX_STREAMS)))
    cuts = [values.size * s // n for s in range(n + 1)]
    return [[(values[a:e], indexes[a:e])] for a, e in zip(cuts, cuts[1:], strict=False)]


def time_cpu(streams, repeat: int) -> dict[str, float]:
    g = gaussian_tables()
    tables = _rans.Tables(g.cdfs, g.sizes, g.offsets)
    out = {}
    for threads, label in ((0, "all"), (1, "1")):
        coded = _rans.encode(tables, streams, threads)

        def decode(coded=coded, threads=threads):
            decs = [_rans.Decoder(tables, c) for c in coded]
            _rans.decode_many(decs, [s[0][1] for s in streams], threads)
            for d in decs:
                d.finish()

        out[f"cpu_encode_{label}"] = best_of(lambda t=threads: _rans.encode(tables, streams, t),
                                             repeat)
        out[f"cpu_decode_{label}"] = best_of(decode, repeat)
    out["bytes"] = sum(len(c) for c in coded)
    return out


def time_gpu(streams, repeat: int) -> dict[str, float]:
    tables = coder.CoderTables(gaussian_tables(), device="cuda")
    dev_streams = [[(torch.from_numpy(v).cuda(), torch.from_numpy(i).cuda()) for v, i in s]
                   for s in streams]
    indexes = [s[0][1] for s in dev_streams]
    sync = torch.cuda.synchronize
    data, offsets = coder.encode(tables, dev_streams)
    assert coder.to_bytes(data, offsets) == _rans.encode(tables.cpu, streams), "not bit-exact"

    def decode():
        dec = coder.Decoder(tables, (data, offsets))
        out = dec.decode(indexes)
        dec.finish()
        return out

    for out, s in zip(decode(), dev_streams, strict=True):
        assert torch.equal(out, s[0][0]), "decoded values differ"

    # The decode launch alone: a fresh decoder state each time, timed with CUDA events.
    ops, flat = tables._ops, torch.cat(indexes)
    lengths = [i.numel() for i in indexes]
    starts = torch.tensor(np.concatenate([[0], np.cumsum(lengths)[:-1]]), device="cuda")
    lens, out = torch.tensor(lengths, device="cuda"), torch.empty_like(flat)
    kernel = []
    for _ in range(repeat + 1):
        states, pos, status = ops.open(data, offsets)
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        ops.decode(tables.blob, tables.count, data, offsets, flat, starts, lens, out, states, pos,
                   status)
        end.record()
        sync()
        assert not status.any()
        kernel.append(begin.elapsed_time(end) / 1e3)
    return {"gpu_encode": best_of(lambda: coder.encode(tables, dev_streams), repeat, sync),
            "gpu_decode": best_of(decode, repeat, sync), "gpu_decode_kernel": min(kernel[1:])}


def time_compressai(images, repeat: int) -> dict[str, float] | None:
    """CompressAI's coder, one string per image, its own tables for the same 64 scales."""
    try:
        from vs_compressai import import_compressai

        _, mbt2018_mean = import_compressai()
        from compressai.ans import RansDecoder, RansEncoder
    except ImportError:
        return None
    model = mbt2018_mean(quality=3, pretrained=False).eval()
    model.update(force=True)
    gc = model.gaussian_conditional
    cdf, cdf_len, off = (gc.quantized_cdf.tolist(), gc.cdf_length.reshape(-1).int().tolist(),
                         gc.offset.reshape(-1).int().tolist())
    lists = [(v.tolist(), i.tolist()) for v, i in images]
    enc, dec = RansEncoder(), RansDecoder()
    strings = [enc.encode_with_indexes(v, i, cdf, cdf_len, off) for v, i in lists]

    def decode():
        for s, (_, i) in zip(strings, lists, strict=True):
            dec.decode_with_indexes(s, i, cdf, cdf_len, off)

    reps = min(repeat, 2)  # slow
    return {"cai_encode": best_of(lambda: [enc.encode_with_indexes(v, i, cdf, cdf_len, off)
                                           for v, i in lists], reps),
            "cai_decode": best_of(decode, reps)}


def measure(repeat: int, quick: bool, gpu: bool) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for name, shapes in batches(quick):
        images = [image_latents(rng, h, w) for h, w in shapes]
        streams = [s for v, i in images for s in streams_of(v, i)]
        row = {"batch": name, "symbols": sum(v.size for v, _ in images), "streams": len(streams)}
        row.update(time_cpu(streams, repeat))
        if gpu:
            row.update(time_gpu(streams, repeat))
        row.update(time_compressai(images, repeat) or {})
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


COLUMNS = [("gpu_encode", "GPU encode"), ("gpu_decode", "GPU decode"),
           ("gpu_decode_kernel", "GPU decode kernel"),
           ("cpu_encode_all", "CPU encode, all threads"),
           ("cpu_decode_all", "CPU decode, all threads"),
           ("cpu_encode_1", "CPU encode, 1 thread"), ("cpu_decode_1", "CPU decode, 1 thread"),
           ("cai_encode", "CompressAI encode"), ("cai_decode", "CompressAI decode")]


def format_row(row: dict) -> str:
    rates = [f"{row['symbols'] / row[k] / 1e6:,.0f}" if k in row else "-" for k, _ in COLUMNS]
    bits = 8 * row["bytes"] / row["symbols"]
    return f"| {row['batch']} | {row['symbols']:,} | {row['streams']} | {bits:.2f} | " + \
        " | ".join(rates) + " |"


def table(rows: list[dict], gpu: bool, threads: int) -> str:
    device = torch.cuda.get_device_name() if gpu else "no GPU"
    cpu = platform.processor() or platform.machine()
    head = ["batch", "symbols", "streams", "bits/symbol"] + [c for _, c in COLUMNS]
    lines = [
        f"Date {date.today()}, commit {commit()}, {device}, CPU {cpu} ({threads} threads), "
        f"torch {torch.__version__}.",
        "Command: `python benchmarks/bench_gpu_coder.py --write`. M symbols per second (best "
        "of several runs) on the same symbols: hyperprior-like y (192 channels, Gaussian at "
        "scales log-uniform over [0.11, 20], the engine's tables), ~16 KB streams as the codec "
        "cuts them; GPU figures from device memory to device memory.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    return "\n".join(lines + [format_row(r) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one Kodak-sized image only")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    gpu = coder.available()
    if not gpu:
        print(f"GPU coder absent ({coder.unavailable_reason()}): measuring the CPU side only")
    threads = os.cpu_count() or 1
    rows = measure(args.repeat, args.quick, gpu)
    text = table(rows, gpu, threads)
    print("\n" + text)
    if args.write:
        if not gpu:
            raise SystemExit("--write needs a GPU: the section reports GPU figures")
        write_section("gpu_coder", "GPU entropy coder", text)


if __name__ == "__main__":
    main()
