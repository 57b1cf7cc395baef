"""The whole codec on the GPU: end-to-end throughput against CompressAI, and cross-device decoding.

    python benchmarks/gpu_pipeline.py [--repeat 5] [--write]      # throughput (CUDA)
    python benchmarks/gpu_pipeline.py --cross-device [--write]    # Kodak, GPU <-> CPU

Throughput: images and megapixels per second of compress and of decompress at 768x512 and
1920x1080, batches of 1 and 16, for this engine (`Codec.compress_batch` /
`decompress_batch` with device="cuda": networks, quantization kernel and rANS coder on the GPU)
and CompressAI's `mbt2018_mean` (`compress` / `decompress`, its networks on the same GPU, its
coder on the CPU), both N=128, M=192 with random weights; best of --repeat, synchronised.
Goals on an H100: 1920x1080 compress and decompress each within 10 ms at batch 1; at least 10x
CompressAI end to end.

Cross-device: every Kodak image at every shipped quality is encoded on one device and decoded on
the other, in both directions, and counted correct when the decoded image matches the decoding
on the encoding device to within float noise (PSNR between the two above 45 dB; a flipped
scale-table index corrupts the rest of its stream, far below that). `--devices cpu cpu` runs the
same check on a machine without a GPU (a test of the script, not of the claim).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results_md import commit, write_section  # noqa: E402
from timing import best_of  # noqa: E402
from vs_compressai import import_compressai  # noqa: E402

from engine import Codec, zoo  # noqa: E402
from engine.images import to_batch  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from engine.models import MeanScaleHyperprior, ModelConfig  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
SIZES = {"768x512": (512, 768), "1920x1080": (1080, 1920)}
BATCHES = (1, 16)


def throughput(repeat: int) -> list[dict]:
    torch.manual_seed(0)
    ours = Codec(weights=MeanScaleHyperprior(ModelConfig(128, 192)).eval().requires_grad_(False),
                 device="cuda")
    _, mbt2018_mean = import_compressai()
    theirs = mbt2018_mean(quality=3, pretrained=False).eval().cuda()
    theirs.update(force=True)
    print(f"coder: {ours.coder_backend('cuda')}")
    rows = []
    for size_name, (h, w) in SIZES.items():
        for b in BATCHES:
            row = {"size": size_name, "batch": b, "pixels": b * h * w,
                   **time_both(ours, theirs, torch.rand(b, 3, h, w, device="cuda"), repeat)}
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


@torch.inference_mode()
def time_both(ours: Codec, theirs: torch.nn.Module, x: torch.Tensor, repeat: int
              ) -> dict[str, float]:
    data = ours.compress_batch(x)
    cai = theirs.compress(x)
    sync = torch.cuda.synchronize
    return {"ours_compress": best_of(lambda: ours.compress_batch(x), repeat, sync),
            "ours_decompress": best_of(lambda: ours.decompress_batch(data, "cuda"), repeat, sync),
            "cai_compress": best_of(lambda: theirs.compress(x), repeat, sync),
            "cai_decompress": best_of(lambda: theirs.decompress(cai["strings"], cai["shape"]),
                                      repeat, sync)}


def format_row(r: dict) -> str:
    cells = [r["size"], str(r["batch"])]
    for op in ("compress", "decompress"):
        ours, cai = r[f"ours_{op}"], r[f"cai_{op}"]
        cells += [f"{1e3 * ours / r['batch']:.2f}", f"{r['batch'] / ours:.1f}",
                  f"{r['pixels'] / ours / 1e6:.0f}", f"{r['batch'] / cai:.1f}",
                  f"{cai / ours:.1f}x"]
    total = ((r["cai_compress"] + r["cai_decompress"])
             / (r["ours_compress"] + r["ours_decompress"]))
    return "| " + " | ".join(cells + [f"{total:.1f}x"]) + " |"


def throughput_table(rows: list[dict], command: str) -> str:
    head = ["size", "batch"]
    for op in ("compress", "decompress"):
        head += [f"{op}: ms/image", "images/s", "MP/s", "CompressAI images/s", "ratio"]
    lines = [f"Date {date.today()}, commit {commit()}, {torch.cuda.get_device_name()}, "
             f"torch {torch.__version__}. Command: `{command}`. Both N=128, M=192, random "
             "weights; best of several synchronised runs; ratio = CompressAI's time / ours.", "",
             "| " + " | ".join([*head, "end-to-end ratio"]) + " |",
             "|" + " --- |" * (len(head) + 1)]
    return "\n".join(lines + [format_row(r) for r in rows])


def cross_device(devices: tuple[str, str], folder: Path, limit: int) -> tuple[list[dict], str]:
    images = sorted(folder.glob("*.png"))[:limit]
    if not images:
        raise SystemExit(f"no PNG images in {folder}")
    codec = Codec()
    rows = []
    for q in zoo.shipped_qualities():
        for path in images:
            x = to_batch(path)
            for enc, dec in (devices, devices[::-1]):
                data = codec.compress_batch([x.to(enc)])[0]
                same = codec.decompress(data, enc).cpu()
                other = codec.decompress(data, dec).cpu()
                rows.append({"quality": q, "image": path.name, "encode": enc, "decode": dec,
                             "psnr_between": psnr(other, same)})
    lines = [f"Date {date.today()}, commit {commit()}, "
             f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}. "
             f"Command: `python benchmarks/gpu_pipeline.py --cross-device --devices "
             f"{' '.join(devices)} --limit {limit} --write`. Correct: the cross-device "
             "decoding within 45 dB of the same-device one.", "",
             "| quality | encoded on | decoded on | correct | lowest PSNR between the two |",
             "| --- | --- | --- | --- | --- |"]
    for q in zoo.shipped_qualities():
        for enc, dec in (devices, devices[::-1]):
            sel = [r for r in rows if (r["quality"], r["encode"], r["decode"]) == (q, enc, dec)]
            ok = sum(r["psnr_between"] > 45 for r in sel)
            worst = min(r["psnr_between"] for r in sel)
            lines.append(f"| {q} | {enc} | {dec} | {ok} of {len(sel)} | {worst:.1f} dB |")
    return rows, "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--cross-device", action="store_true")
    p.add_argument("--devices", nargs=2, default=["cuda", "cpu"])
    p.add_argument("--images", type=Path, default=KODAK, help="cross-device: the Kodak folder")
    p.add_argument("--limit", type=int, default=24, help="cross-device: use the first N images")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    if a.cross_device:
        _, text = cross_device(tuple(a.devices), a.images, a.limit)
        print(text)
        if a.write:
            write_section("cross_device", "Cross-device decoding (GPU <-> CPU)", text)
        return
    if not torch.cuda.is_available():
        raise SystemExit("the throughput benchmark needs CUDA")
    text = throughput_table(throughput(a.repeat), "python benchmarks/gpu_pipeline.py --write")
    print(text)
    if a.write:
        write_section("gpu_pipeline", "End to end on the GPU", text)


if __name__ == "__main__":
    main()
