"""Whether decoding a joint autoregressive stream depends on the machine: streams encoded in one
configuration, decoded in fresh processes under others, their latents compared bit for bit.

    python benchmarks/context_cross.py WEIGHTS... [--images 6] [--write]

Each weights file (an imported mbt2018 / cheng2020 model with its integer context companion)
encodes the first --images Kodak images here (the machine's ISA, 2 threads, one image at a time).
Decoders, each a fresh process: the generic ISA with one thread and the integer layers on the
int64 reference (NIC_KERNELS=reference: not the encoder's int8 GEMM and C++ wavefront step);
AVX2 (the int8 GEMM held to it too) with 2 threads and every stream of the run in one
`decompress_batch`; the Triton interpreter for every integer kernel
(NIC_KERNELS=triton, one thread) on a 128x128 crop of the first image, since the interpreter is
slow (over 15 minutes for a 256x256 crop at N=192). Each decoder hashes the y_hat it hands to
g_s (it fixes every symbol, mean and table) and the result must equal the encoder's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KODAK = ROOT.parent / "shared" / "data" / "kodak"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_md import commit, cpu, write_section  # noqa: E402

DECODERS = {  # name: (environment, batch all streams in one call, the cropped streams)
    "generic ISA, 1 thread, integer layers on the int64 reference, one stream a call": (
        {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
         "NIC_KERNELS": "reference", "OMP_NUM_THREADS": "1"}, False, False),
    "AVX2 (the int8 GEMM too), 2 threads, all streams in one call": (
        {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "NIC_INT_GEMM_AVX2": "1",
         "OMP_NUM_THREADS": "2"}, True, False),
    "Triton interpreter (integer convolutions), 1 thread": (
        {"NIC_KERNELS": "triton", "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}, False,
        True),
}

# Runs in each decoding process: argv = weights, batch (0/1), stream files...; prints one hash
# of y_hat per stream.
DECODE = """
import hashlib, sys
from engine import Codec
from engine.models import JointAutoregressive as J
seen, synthesize = [], J.synthesize
J.synthesize = lambda self, y: (seen.extend(y.split(1)), synthesize(self, y))[1]
codec = Codec(weights=sys.argv[1])
streams = [open(p, "rb").read() for p in sys.argv[3:]]
if sys.argv[2] == "1":
    codec.decompress_batch(streams)
else:
    for s in streams:
        codec.decompress(s)
print(" ".join(hashlib.sha256(y.contiguous().numpy().tobytes()).hexdigest() for y in seen))
"""


def encode(weights: Path, folder: Path, count: int) -> dict[str, list]:
    """The streams of the first `count` Kodak images and of a 128x128 crop, with the hashes
    of the encoder's own y_hat (the decoder of the same process, reconstruct)."""
    import torch

    from engine import Codec
    from engine.images import list_images, to_batch

    torch.set_num_threads(2)
    codec = Codec(weights=weights)
    model = codec.model()
    out: dict[str, list] = {"full": [], "crop": []}
    paths = list_images(KODAK)[:count]
    for name, xs in (("full", [to_batch(p) for p in paths]),
                     ("crop", [to_batch(paths[0])[..., :128, :128]])):
        for i, x in enumerate(xs):
            data = codec.compress(x)
            path = folder / f"{weights.stem}-{name}-{i}.nic"
            path.write_bytes(data)
            seen = []
            synthesize = model.synthesize
            model.synthesize = lambda y, seen=seen, f=synthesize: (seen.append(y), f(y))[1]
            encoded = model.encode_latents(model.analyze(model.pad(x)), 0)
            model.reconstruct(encoded, *x.shape[2:], 0)
            del model.synthesize
            out[name].append((path, hashlib.sha256(seen[0].numpy().tobytes()).hexdigest()))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path)
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for weights in a.weights:
            streams = encode(weights, Path(tmp), a.images)
            for name, (env, batch, crops) in DECODERS.items():
                items = streams["crop" if crops else "full"]
                run = subprocess.run(
                    [sys.executable, "-c", DECODE, str(weights), str(int(batch)),
                     *(str(path) for path, _ in items)],
                    cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True)
                got = run.stdout.split() if run.returncode == 0 else []
                same = sum(g == h for g, (_, h) in zip(got, items, strict=False))
                rows.append(f"| {weights.name} | {name} | {same} of {len(items)} "
                            f"{'crops' if crops else 'images'} |")
                print(rows[-1], run.stderr.strip()[-300:] if run.returncode else "", flush=True)
    text = "\n".join([
        f"Date {date.today()}, commit {commit()}, {cpu()}. Command: `python "
        f"benchmarks/context_cross.py {' '.join(sys.argv[1:])}`. Encoded with the machine's "
        "ISA and 2 threads, one image at a time; each decoder a fresh process; a row counts the "
        "streams whose decoded y_hat (every symbol plus its fixed-point mean) is bit for bit "
        "the encoder's.", "",
        "| weights | decoder | identical y_hat |", "| --- | --- | --- |", *rows])
    print(text)
    if a.write:
        write_section("context_cross", "Joint autoregressive models: decoding on other "
                      "configurations (CPU)", text)


if __name__ == "__main__":
    main()
