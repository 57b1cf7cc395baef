"""Command line: python -m engine {compress, decompress, info, eval, demo}."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import format
from .codec import DEFAULT_QUALITY, Codec
from .errors import CodecError
from .images import save_png, to_batch
from .metrics import ms_ssim, psnr
from .precision import PRECISIONS, resolve


def _compress(a: argparse.Namespace) -> None:
    x = to_batch(a.input, drop_alpha=a.drop_alpha)
    data = Codec(a.quality, a.device, precision=a.precision).compress(x)
    Path(a.output).write_bytes(data)
    h, w = x.shape[2:]
    print(f"{a.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h})")


def _decompress(a: argparse.Namespace) -> None:
    x = Codec(device=a.device, precision=a.precision).decompress(Path(a.input).read_bytes(),
                                                                 a.device)
    save_png(x, a.output)
    print(f"{a.output}: {x.shape[2]}x{x.shape[1]}")


def _info(a: argparse.Namespace) -> None:
    data = Path(a.input).read_bytes()
    header, _ = format.unpack(data)
    print(f"file         {a.input} ({len(data)} bytes)")
    print(f"format       version {format.VERSION}")
    print(f"model        id {header.model_id}, quality {header.quality}, "
          f"weights {header.fingerprint:08x}")
    print(f"image        {header.width}x{header.height} "
          f"({8 * len(data) / (header.width * header.height):.4f} bpp)")
    print(f"latents      z {header.z_shape}, y {header.y_shape}")
    print(f"streams      {len(header.stream_lengths)}: {list(header.stream_lengths)} bytes")
    print(f"header       {len(data) - sum(header.stream_lengths)} bytes")


def _eval(a: argparse.Namespace) -> None:
    from .evaluate import evaluate_folder

    results = evaluate_folder(a.folder, a.quality, a.device, a.limit, precision=a.precision)
    for q, r in results.items():
        print(f"\nquality {q}")
        print(f"{'image':24s} {'bpp':>8s} {'PSNR':>8s} {'MS-SSIM':>8s} {'enc s':>8s} {'dec s':>8s}")
        for row in [*r["images"], {"name": "mean", **r["mean"]}]:
            print(f"{row['name']:24s} {row['bpp']:8.4f} {row['psnr']:8.3f} {row['ms_ssim']:8.5f} "
                  f"{row['encode_s']:8.3f} {row['decode_s']:8.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({str(q): r for q, r in results.items()}, indent=1))
        print(f"\nwrote {a.json}")


def _demo(a: argparse.Namespace) -> None:
    from skimage import data as samples

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x = to_batch(samples.astronaut())[0]
    if a.device:
        x = x.to(a.device)
    codec = Codec(a.quality, a.device, precision=a.precision)
    codec.compress(torch.rand(3, 64, 64))  # warm-up: load the model and its tables
    t0 = time.perf_counter()
    data = codec.compress(x)
    t1 = time.perf_counter()
    x_hat = codec.decompress(data, a.device)
    t2 = time.perf_counter()
    (out / "astronaut.nic").write_bytes(data)
    save_png(x_hat, out / "astronaut_decoded.png")
    h, w = x.shape[1:]
    print(f"image      scikit-image astronaut, {w}x{h}, quality {a.quality}")
    device = codec.device or torch.device("cpu")
    dtype = resolve(codec.precision, device)
    print(f"device     {device} (g_a and g_s in {str(dtype).removeprefix('torch.')}), "
          f"entropy coder {codec.coder_backend(device)}")
    print(f"stream     {out / 'astronaut.nic'}: {len(data)} bytes, "
          f"{8 * len(data) / (h * w):.4f} bpp")
    print(f"decoded    {out / 'astronaut_decoded.png'}")
    print(f"PSNR       {psnr(x_hat, x):.2f} dB")
    print(f"MS-SSIM    {ms_ssim(x_hat, x):.4f}")
    print(f"encode     {(t1 - t0) * 1000:.0f} ms")
    print(f"decode     {(t2 - t1) * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine", description="nicengine image codec")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress an image file")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("-q", "--quality", type=int, default=DEFAULT_QUALITY)
    c.add_argument("--drop-alpha", action="store_true", help="discard an alpha channel")
    c.set_defaults(run=_compress)

    d = sub.add_parser("decompress", help="decode a stream to PNG")
    d.add_argument("input")
    d.add_argument("output")
    d.set_defaults(run=_decompress)

    i = sub.add_parser("info", help="print a stream's header")
    i.add_argument("input")
    i.set_defaults(run=_info)

    e = sub.add_parser("eval", help="rate-distortion of a folder of images")
    e.add_argument("folder")
    e.add_argument("-q", "--quality", type=int, nargs="+", default=[DEFAULT_QUALITY])
    e.add_argument("--json", help="write per-image and mean results to this file")
    e.add_argument("--limit", type=int, default=None, help="first N images only")
    e.set_defaults(run=_eval)

    m = sub.add_parser("demo", help="compress a sample photo and report the figures")
    m.add_argument("-q", "--quality", type=int, default=DEFAULT_QUALITY)
    m.add_argument("--out", default="out")
    m.set_defaults(run=_demo)

    for s in (c, d, e, m):
        s.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
        s.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="of g_a and g_s; auto: bfloat16 on CPUs with AMX, else float32")
    a = p.parse_args(argv)
    try:
        a.run(a)
    except (CodecError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
