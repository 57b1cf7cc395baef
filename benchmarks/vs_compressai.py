"""This engine against CompressAI, side by side in one run, on the same image and symbols.

    python benchmarks/vs_compressai.py [--image PATH] [--repeat 5] [--threads 2 1] [--write]

Both sides use the mean-scale hyperprior at N=128, M=192 with random weights (only timing is
compared). Measured: compress and decompress time of one image at each thread count, in fresh
processes: one under the engine's heap policy (engine/heap.py, which `import engine` applies
to the whole process, so CompressAI beside it gets it too) and one with glibc's defaults
(NICENGINE_HEAP=system: CompressAI as its users run it); entropy-coder throughput on the same
symbols and table indexes on one thread; peak memory of compress and decompress at 768x512 and
4000x3000 (each in a fresh process). `--write` puts the table into benchmarks/RESULTS.md.

CompressAI is installed without its dependencies (its torchvision does not load beside the CPU
torch here; it imports torchvision only to fill a registry, so a stand-in module is used):
    pip install --no-deps compressai==1.2.8 torch_geometric && pip install requests einops pandas \
        xxhash psutil
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
KODIM = ROOT.parent / "shared" / "data" / "kodak" / "kodim23.png"
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, isa_limited, write_section  # noqa: E402
from timing import best_of, peak_rss_in_child, print_peak_rss  # noqa: E402


def import_compressai():
    for name in ("torchvision", "torchvision.transforms"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    import compressai
    from compressai.zoo import mbt2018_mean

    return compressai, mbt2018_mean


def models(precision: str = "auto", integer: bool = False):
    from engine import Codec
    from engine.models import MeanScaleHyperprior, ModelConfig

    _, mbt2018_mean = import_compressai()
    torch.manual_seed(0)
    theirs = mbt2018_mean(quality=3, pretrained=False).eval()
    theirs.update(force=True)
    ours = MeanScaleHyperprior(ModelConfig(128, 192)).eval().requires_grad_(False)
    if integer:
        attach_integer_hyper(ours)
    return Codec(weights=ours, precision=precision), theirs


def attach_integer_hyper(model) -> None:
    """An integer hyper-decoder for random weights, derived without fine-tuning (the speed is
    that of a fine-tuned one), calibrated on z of a random image."""
    from engine.entropy.gaussian import scale_bounds
    from engine.models.integer_hyper import FakeIntegerHyper, IntegerHyper

    with torch.no_grad():
        z = model.analyze(load_image(None))[1]
        z_hat = model.entropy_z.dequantize(model.entropy_z.symbols(z))
        fake = FakeIntegerHyper(model.h_s, FakeIntegerHyper.calibrate(model.h_s, z_hat))
        model.attach_integer_hyper(IntegerHyper.build(fake, scale_bounds(z), model.tables()))


def load_image(path: Path | None, h: int = 512, w: int = 768) -> torch.Tensor:
    from engine.images import to_batch

    if path is not None and path.exists():
        return to_batch(path)
    g = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, h, w, generator=g)


HEAPS = {"engine": "the engine's heap policy", "system": "glibc's defaults"}


def time_codecs_in_child(image: Path, repeat: int, threads: int, heap: str) -> dict[str, float]:
    """`time_codecs` in a fresh process with `threads` threads and the heap policy `heap`."""
    env = {**os.environ, "NICENGINE_HEAP": "system" if heap == "system" else "retain"}
    run = subprocess.run([sys.executable, __file__, "--time", str(image), str(repeat),
                          str(threads)], capture_output=True, text=True, check=True, env=env)
    return json.loads(run.stdout.strip().splitlines()[-1])


def time_codecs(x: torch.Tensor, repeat: int) -> dict[str, float]:
    """oursint: the default path (default precision, the integer hyper-decoder); ours32: float32
    throughout, like CompressAI (h_s in float64)."""
    codec32, theirs = models("float32")
    codec_int, _ = models(integer=True)
    with torch.inference_mode():
        out = theirs.compress(x)
        times = {
            "cai_compress": best_of(lambda: theirs.compress(x), repeat),
            "cai_decompress": best_of(lambda: theirs.decompress(out["strings"], out["shape"]),
                                      repeat),
        }
        for name, c in (("ours32", codec32), ("oursint", codec_int)):
            data = c.compress(x)
            times[f"{name}_compress"] = best_of(lambda c=c: c.compress(x), repeat)
            times[f"{name}_decompress"] = best_of(lambda c=c, d=data: c.decompress(d), repeat)
        return times


def time_coders(n: int, repeat: int) -> dict[str, float]:
    """Both coders on the same realistic latents: Gaussian symbols at log-uniform scales."""
    compressai, _ = import_compressai()
    from compressai.ans import RansDecoder, RansEncoder

    from engine import coder
    from engine.entropy.gaussian import SCALES, gaussian_tables

    _, theirs = models()
    gc = theirs.gaussian_conditional
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 40, n).astype(np.int32)  # scales 0.11 .. ~20, as in trained models
    sym = np.round(rng.normal(0, SCALES[idx])).astype(np.int32)
    cdf, cdf_len, off = (gc.quantized_cdf.tolist(), gc.cdf_length.reshape(-1).int().tolist(),
                         gc.offset.reshape(-1).int().tolist())
    enc, dec = RansEncoder(), RansDecoder()
    sym_l, idx_l = sym.tolist(), idx.tolist()

    def cai_encode():
        return enc.encode_with_indexes(sym_l, idx_l, cdf, cdf_len, off)

    string = cai_encode()
    assert dec.decode_with_indexes(string, idx_l, cdf, cdf_len, off) == sym_l
    cpu = coder.open_coder(gaussian_tables(), "cpu", threads=1)

    def ours_encode():
        return cpu.encode([[(sym, idx)]])[0]

    def ours_decode():
        d = cpu.decoder([ours])
        out = d.decode([idx])[0]
        d.finish()
        return out.numpy()

    ours = ours_encode()

    assert np.array_equal(ours_decode(), sym)
    return {
        "symbols": n, "ours_bytes": len(ours), "cai_bytes": len(string),
        "ours_encode": best_of(ours_encode, repeat),
        "ours_decode": best_of(ours_decode, repeat),
        "cai_encode": best_of(cai_encode, repeat),
        "cai_decode": best_of(lambda: dec.decode_with_indexes(string, idx_l, cdf, cdf_len, off),
                              repeat),
    }


def memory_probe(side: str, op: str, h: int, w: int) -> None:
    """Run in a child process: print the peak RSS during one compress or decompress (MiB), and
    its growth over the RSS just before the call. Linux only (/proc)."""
    codec, theirs = models()
    x = load_image(None, h, w)
    if side == "cai":  # CompressAI takes sizes that are multiples of 64; its own eval pads so
        x = torch.nn.functional.pad(x, (0, -w % 64, 0, -h % 64), mode="replicate")
    with torch.inference_mode():
        if side == "ours":
            data = codec.compress(x) if op == "decompress" else None
            call = (lambda: codec.compress(x)) if op == "compress" else (
                lambda: codec.decompress(data))
        else:
            out = theirs.compress(x) if op == "decompress" else None
            call = (lambda: theirs.compress(x)) if op == "compress" else (
                lambda: theirs.decompress(out["strings"], out["shape"]))
        print_peak_rss(call)


def measure_memory(side: str, op: str, h: int, w: int) -> dict[str, float]:
    return peak_rss_in_child(__file__, side, op, h, w)


def report(codecs: dict, coders: dict, memory: dict, image: str) -> str:
    """codecs: {(threads, heap): time_codecs' dict}."""
    from engine.precision import describe

    n = coders["symbols"]
    chosen = describe("auto", torch.device("cpu"))
    wrapper = "bash benchmarks/without_avx512.sh " if isa_limited() else ""
    for times in codecs.values():
        for name in ("ours32", "oursint", "cai"):
            times[f"{name}_total"] = times[f"{name}_compress"] + times[f"{name}_decompress"]
    lines = [
        f"Date {date.today()}, commit {commit()}, {cpu()}, torch {torch.__version__}; "
        f"image: {image}.",
        f"Command: `{wrapper}python benchmarks/vs_compressai.py {' '.join(sys.argv[1:])}`. "
        "Both: mean-scale hyperprior N=128, M=192, random weights; best of several runs, each "
        "setting in a fresh process. nicengine runs at its default precision "
        f"({chosen} on this CPU; `engine.precision`) with the exact integer hyper-decoder "
        "(`engine.models.integer_hyper`, the default of the models that have one: the default "
        "path); in the rows marked float32, in float32 throughout like CompressAI, with h_s "
        "in float64. Heap: the engine's policy (engine/heap.py, which `import engine` applies "
        "to the whole process: CompressAI beside it gets it too) or glibc's defaults "
        "(NICENGINE_HEAP=system: how CompressAI's users run it).",
        "",
        "| measure | threads | heap (both sides) | nicengine | CompressAI | "
        "ratio (CompressAI / ours) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for (threads, heap), times in codecs.items():
        for name, label in (("oursint", ""), ("ours32", ", float32")):
            for op, what in (("compress", "compress"), ("decompress", "decompress"),
                             ("total", "compress + decompress")):
                ours, cai = times[f"{name}_{op}"], times[f"cai_{op}"]
                lines.append(f"| {what}{label} (s) | {threads} | {HEAPS[heap]} | {ours:.3f} | "
                             f"{cai:.3f} | {cai / ours:.2f}x |")
    for threads in sorted({t for t, _ in codecs}, reverse=True):
        if (threads, "engine") in codecs and (threads, "system") in codecs:
            ours, cai = codecs[(threads, "engine")], codecs[(threads, "system")]
            for op, what in (("compress", "compress"), ("decompress", "decompress"),
                             ("total", "compress + decompress")):
                lines.append(f"| **{what}: the engine's default path against CompressAI as "
                             f"installed** (s) | {threads} | each its own | "
                             f"{ours[f'oursint_{op}']:.3f} | {cai[f'cai_{op}']:.3f} | "
                             f"**{cai[f'cai_{op}'] / ours[f'oursint_{op}']:.2f}x** |")
    lines += ["", "| measure | nicengine | CompressAI | ratio |", "| --- | --- | --- | --- |"]
    for op in ("encode", "decode"):
        ours, cai = n / coders[f"ours_{op}"] / 1e6, n / coders[f"cai_{op}"] / 1e6
        lines.append(f"| coder {op}, 1 thread (M symbols/s) | {ours:.1f} | {cai:.1f} | "
                     f"{ours / cai:.2f}x |")
    lines.append(f"| coded size of the same {n} symbols (bytes) | {coders['ours_bytes']} | "
                 f"{coders['cai_bytes']} | {coders['cai_bytes'] / coders['ours_bytes']:.3f}x |")
    for (side, op, h, w), m in memory.items():
        if side == "ours":
            cai = memory[("cai", op, h, w)]
            lines.append(f"| peak RSS, {op} {w}x{h} (MiB; growth during the call) | "
                         f"{m['peak_mib']:.0f} (+{m['growth_mib']:.0f}) | "
                         f"{cai['peak_mib']:.0f} (+{cai['growth_mib']:.0f}) | "
                         f"{cai['peak_mib'] / m['peak_mib']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", type=Path, default=KODIM)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--symbols", type=int, default=2_000_000)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    p.add_argument("--probe", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--time", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.probe:
        side, op, h, w = a.probe
        memory_probe(side, op, int(h), int(w))
        return
    if a.time:
        image, repeat, threads = a.time
        torch.set_num_threads(int(threads))
        print(json.dumps(time_codecs(load_image(Path(image)), int(repeat))))
        return
    image = a.image.name if a.image.exists() else "random 768x512"
    coders = time_coders(a.symbols, a.repeat)
    codecs = {(t, heap): time_codecs_in_child(a.image, a.repeat, t, heap)
              for t in a.threads for heap in HEAPS}
    memory = {}
    if not a.no_memory:
        for h, w in ((512, 768), (3000, 4000)):
            for op in ("compress", "decompress"):
                for side in ("ours", "cai"):
                    memory[(side, op, h, w)] = measure_memory(side, op, h, w)
    text = report(codecs, coders, memory, image)
    print(text)
    if a.write:
        if isa_limited():  # its own section: the figures of a CPU without AVX-512
            write_section("vs_compressai_avx2", "nicengine vs CompressAI (CPU held to AVX2)",
                          text)
        else:
            write_section("vs_compressai", "nicengine vs CompressAI (CPU)", text)


if __name__ == "__main__":
    main()
