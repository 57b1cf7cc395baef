"""The CUDA rANS coder against the CPU coder and CompressAI's, on the same symbols.

    python benchmarks/bench_gpu_coder.py [--repeat 3] [--write]
    python benchmarks/bench_gpu_coder.py --emulate --toy     # no GPU: a test of the script

Latents like a trained hyperprior's y: M=192 channels at Kodak size (32 x 48, a 768x512 image)
and 1080p size (68 x 120), Gaussian symbols at scales log-uniform over [0.11, 20], coded with
the engine's Gaussian tables (`gaussian_tables()`), each image cut into streams of about 16 KB
as `Codec` cuts it. Batches of 1 and 16 images of each size, and 16 images of sizes from Kodak's
to 1080p's (the goal's batch, first after the smallest). Figures are millions of symbols per
second, best of --repeat, through `engine.coder.open_coder` as the codec calls it:

* CUDA encode: symbols on the GPU -> one bytes object per stream on the host;
* CUDA decode: those bytes -> symbols on the GPU: upload and open, one segment per stream,
  finish; "decode call": the `decode` call alone on opened streams (CUDA events);
* the CPU coder, on all threads and on one;
* CompressAI's coder (one thread, one string per image) when it imports.

`--emulate` runs the CUDA coder's algorithm on the host in its place (engine._rans_warp_host;
gpu_session.sh --dry-run); its figures say nothing about a GPU. Each row goes to the session
record (benchmarks/gpu_record.py) as soon as it is measured; `--write` (on a GPU) puts the table
between <!-- gpu_coder:start --> and <!-- gpu_coder:end --> in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_record import describe, machine, record  # noqa: E402
from results_md import write_section  # noqa: E402
from timing import best_of  # noqa: E402

from engine import coder, format  # noqa: E402
from engine.codec import SYMBOLS_PER_STREAM  # noqa: E402
from engine.entropy.gaussian import SCALES, gaussian_tables  # noqa: E402

KODAK, HD = (32, 48), (68, 120)
M = 192
STREAM_BYTES = 16384  # Codec's default target size of one stream
STEP = "gpu_coder"  # the rows' name in the session record


def batches(toy: bool) -> list[tuple[str, list[tuple[int, int]]]]:
    if toy:
        return [("toy x2", [(4, 6), (6, 4)])]
    mixed = [(round(KODAK[0] + (HD[0] - KODAK[0]) * i / 15),
              round(KODAK[1] + (HD[1] - KODAK[1]) * i / 15)) for i in range(16)]
    return [("Kodak x1", [KODAK]), ("Kodak..1080p x16", mixed), ("1080p x1", [HD]),
            ("Kodak x16", [KODAK] * 16), ("1080p x16", [HD] * 16)]


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
    """One image's y cut into streams as `Codec` cuts a pass (one segment each)."""
    by_size = round(ideal_bits(values, indexes) / 8 / STREAM_BYTES)
    n = int(max(1, min(by_size, values.size // SYMBOLS_PER_STREAM, format.MAX_STREAMS)))
    cuts = [values.size * s // n for s in range(n + 1)]
    return [[(values[a:e], indexes[a:e])] for a, e in zip(cuts, cuts[1:], strict=False)]


def decode_all(warp: coder.Coder, coded: list[bytes], indexes: list) -> list[torch.Tensor]:
    dec = warp.decoder(coded)
    out = dec.decode(indexes)
    dec.finish()
    return out


def time_cpu(streams: list[list[tuple]], repeat: int) -> tuple[dict[str, float], list[bytes]]:
    """The CPU coder on all threads and on one: (times, its coded streams)."""
    out = {}
    indexes = [s[0][1] for s in streams]
    for threads, label in ((0, "all"), (1, "1")):
        cpu = coder.open_coder(gaussian_tables(), "cpu", threads=threads)
        coded = cpu.encode(streams)
        out[f"cpu_encode_{label}"] = best_of(lambda c=cpu: c.encode(streams), repeat)
        out[f"cpu_decode_{label}"] = best_of(lambda c=cpu, d=coded: decode_all(c, d, indexes),
                                             repeat)
    out["bytes"] = sum(len(c) for c in coded)
    return out, coded


def time_warp(streams: list[list[tuple]], cpu_coded: list[bytes], repeat: int, emulate: bool
              ) -> dict[str, float]:
    """The CUDA coder (or its host emulation) on the same streams: bit-exact to the CPU coder's
    bytes, decodes them back, then timed."""
    device = "cpu" if emulate else "cuda"
    warp = coder.open_coder(gaussian_tables(), device, emulate=emulate)
    on_device = [[(torch.from_numpy(v).to(device), torch.from_numpy(i).to(device))
                  for v, i in s] for s in streams]
    indexes = [s[0][1] for s in on_device]
    sync = None if emulate else torch.cuda.synchronize
    if warp.encode(on_device) != cpu_coded:
        raise SystemExit(f"{warp.name} coder: bytes differ from the CPU coder's")
    for out, s in zip(decode_all(warp, cpu_coded, indexes), on_device, strict=True):
        if not torch.equal(out, s[0][0]):
            raise SystemExit(f"{warp.name} coder: decoded values differ")
    calls = []
    for _ in range(repeat + 1):  # the first is a warm-up
        dec = warp.decoder(cpu_coded)
        calls.append(_seconds(lambda d=dec: d.decode(indexes), emulate))
        dec.finish()
    return {"gpu_encode": best_of(lambda: warp.encode(on_device), repeat, sync),
            "gpu_decode": best_of(lambda: decode_all(warp, cpu_coded, indexes), repeat, sync),
            "gpu_decode_call": min(calls[1:])}


def _seconds(fn: Callable[[], object], emulate: bool) -> float:
    """One call of fn, timed with CUDA events (a host clock for the emulation)."""
    if emulate:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    begin.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    return begin.elapsed_time(end) / 1e3


def compressai_coder() -> tuple[object, object, tuple] | str:
    """(encoder, decoder, its tables for the same 64 scales) of CompressAI, or why not."""
    try:
        from vs_compressai import import_compressai

        _, mbt2018_mean = import_compressai()
        from compressai.ans import RansDecoder, RansEncoder
    except Exception as e:  # an absent or broken CompressAI only drops its columns
        return f"CompressAI does not import: {type(e).__name__}: {e}"
    model = mbt2018_mean(quality=3, pretrained=False).eval()
    model.update(force=True)
    gc = model.gaussian_conditional
    tables = (gc.quantized_cdf.tolist(), gc.cdf_length.reshape(-1).int().tolist(),
              gc.offset.reshape(-1).int().tolist())
    return RansEncoder(), RansDecoder(), tables


def time_compressai(cai: tuple, images: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """CompressAI's coder, one string per image."""
    enc, dec, tables = cai
    lists = [(v.tolist(), i.tolist()) for v, i in images]
    strings = [enc.encode_with_indexes(v, i, *tables) for v, i in lists]

    def decode():
        for s, (_, i) in zip(strings, lists, strict=True):
            dec.decode_with_indexes(s, i, *tables)

    # Slow: one timed run after the warm-up.
    return {"cai_encode": best_of(lambda: [enc.encode_with_indexes(v, i, *tables)
                                           for v, i in lists], 1),
            "cai_decode": best_of(decode, 1)}


def measure(repeat: int, toy: bool, warp: str | None) -> list[dict]:
    """warp: None (no CUDA coder), "cuda" or "emulated"."""
    rng = np.random.default_rng(0)
    cai = compressai_coder()
    if isinstance(cai, str):
        print(cai)
    rows = []
    for name, shapes in batches(toy):
        images = [image_latents(rng, h, w) for h, w in shapes]
        streams = [s for v, i in images for s in streams_of(v, i)]
        row = {"batch": name, "symbols": sum(v.size for v, _ in images),
               "streams": len(streams), "warp": warp}
        times, coded = time_cpu(streams, repeat)
        row.update(times)
        if warp is not None:
            row.update(time_warp(streams, coded, repeat, warp == "emulated"))
        if not isinstance(cai, str):
            row.update(time_compressai(cai, images))
        record(STEP, row)
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


COLUMNS = [("gpu_encode", "CUDA encode"), ("gpu_decode", "CUDA decode"),
           ("gpu_decode_call", "CUDA decode call"),
           ("cpu_encode_all", "CPU encode, all threads"),
           ("cpu_decode_all", "CPU decode, all threads"),
           ("cpu_encode_1", "CPU encode, 1 thread"), ("cpu_decode_1", "CPU decode, 1 thread"),
           ("cai_encode", "CompressAI encode"), ("cai_decode", "CompressAI decode")]


def format_row(row: dict) -> str:
    rates = [f"{row['symbols'] / row[k] / 1e6:,.0f}" if k in row else "-" for k, _ in COLUMNS]
    bits = 8 * row["bytes"] / row["symbols"]
    return (f"| {row['batch']} | {row['symbols']:,} | {row['streams']} | {bits:.2f} | "
            + " | ".join(rates) + " |")


def table(rows: list[dict], where: dict) -> str:
    """The RESULTS.md section: `where` is gpu_record.machine() of the machine that ran them."""
    head = ["batch", "symbols", "streams", "bits/symbol"] + [c for _, c in COLUMNS]
    emulated = any(r.get("warp") == "emulated" for r in rows)
    lines = [
        f"{describe(where)}.",
        "Command: `bash benchmarks/gpu_session.sh` (its coder step: `python "
        "benchmarks/bench_gpu_coder.py`). M symbols per second (best of several runs) on the "
        "same symbols: hyperprior-like y (192 channels, Gaussian at scales log-uniform over "
        "[0.11, 20], the engine's tables), ~16 KB streams as the codec cuts them; CUDA encode "
        "from symbols on the GPU to bytes on the host, CUDA decode from those bytes to symbols "
        "on the GPU." + (" The CUDA columns are the host emulation of its algorithm."
                         if emulated else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    return "\n".join(lines + [format_row(r) for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--toy", action="store_true", help="two tiny latents (a test run)")
    parser.add_argument("--emulate", action="store_true",
                        help="the host emulation in place of the CUDA coder (no GPU needed)")
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.emulate:
        warp = "emulated"
    elif coder.available():
        warp = "cuda"
    else:
        warp = None
        print(f"no CUDA coder ({coder.unavailable_reason()}): the CPU side only")
    rows = measure(args.repeat, args.toy, warp)
    text = table(rows, machine())
    print("\n" + text)
    if args.write:
        if warp != "cuda":
            raise SystemExit("--write needs the CUDA coder: the section reports GPU figures")
        write_section("gpu_coder", "GPU entropy coder", text)


if __name__ == "__main__":
    main()
