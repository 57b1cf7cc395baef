"""Command line: python -m engine {compress, decompress, info, eval, demo, compress-dir,
decompress-dir}.

Every failure ends in one line on stderr, never a traceback: exit status 2 for a usage error
(argparse's, or the engine's `UsageError`: a device that is not there, a budget no level fits),
1 for input the engine cannot use (a missing or unreadable file, a file that is
not an image or not a stream, a damaged stream, an image out of range).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from . import format, zoo
from .codec import DEFAULT_MODEL, DEFAULT_QUALITY, DEVICES, Codec, read_stream
from .errors import CodecError, UsageError
from .images import save_png, to_batch
from .metrics import ms_ssim, psnr
from .precision import PRECISIONS, describe
from .refine import METHODS, Refine


def _codec(a: argparse.Namespace) -> Codec:
    return Codec(getattr(a, "quality", DEFAULT_QUALITY), a.device, weights=a.weights,
                 precision=a.precision, model=getattr(a, "model", DEFAULT_MODEL))


def _compress(a: argparse.Namespace) -> None:
    codec = _codec(a)
    x = to_batch(a.input, drop_alpha=a.drop_alpha)
    refine = None
    if a.refine:
        refine = Refine(method=a.refine, **({} if a.iterations is None
                                            else {"iterations": a.iterations}))
    data = codec.compress(x, refine=refine, max_bytes=a.max_bytes, target_bpp=a.target_bpp)
    Path(a.output).write_bytes(data)
    h, w = x.shape[2:]
    print(f"{a.output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp ({w}x{h})")


def _decompress(a: argparse.Namespace) -> None:
    x = _codec(a).decompress(a.input, rectifier=not a.no_rectifier)
    save_png(x, a.output)
    print(f"{a.output}: {x.shape[2]}x{x.shape[1]}")


def _info(a: argparse.Namespace) -> None:
    data = read_stream(a.input)
    header, _ = format.unpack(data)
    print(f"file         {a.input} ({len(data)} bytes)")
    print(f"format       version {header.version}")
    tables = ("" if header.tables_fingerprint is None
              else f", tables {header.tables_fingerprint:08x}")
    name = zoo.stream_model_name(header.kind_id, header.quality, header.fingerprint)
    print(f"model        {name}, quality {header.quality:g}, "
          f"weights {header.fingerprint:08x}{tables}")
    print(f"image        {header.width}x{header.height} "
          f"({8 * len(data) / (header.width * header.height):.4f} bpp)")
    if header.latent_shapes:
        z, y = header.latent_shapes
        print(f"latents      z {z}, y {y}")
    if header.integer_fingerprint is not None:
        print(f"hyper        integer hyper-decoder {header.integer_fingerprint:08x}")
    if header.rectifier:
        print("decoder      with a quantization rectifier (--no-rectifier: without)")
    print(f"streams      {len(header.stream_lengths)}: {list(header.stream_lengths)} bytes")
    print(f"header       {len(data) - sum(header.stream_lengths)} bytes")


def _eval(a: argparse.Namespace) -> None:
    from .dataset import find_manifest
    from .evaluate import evaluate_folder

    if find_manifest(a.folder) is not None:
        _eval_manifest(a)
        return

    results = evaluate_folder(a.folder, a.quality, a.device, a.limit, precision=a.precision,
                              model=a.model)
    for q, r in results.items():
        print(f"\nquality {q:g}")
        print(f"{'image':24s} {'bpp':>8s} {'PSNR':>8s} {'MS-SSIM':>8s} {'enc s':>8s} {'dec s':>8s}")
        for row in [*r["images"], {"name": "mean", **r["mean"]}]:
            print(f"{row['name']:24s} {row['bpp']:8.4f} {row['psnr']:8.3f} {row['ms_ssim']:8.5f} "
                  f"{row['encode_s']:8.3f} {row['decode_s']:8.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps({f"{q:g}": r for q, r in results.items()}, indent=1))
        print(f"\nwrote {a.json}")


def _eval_manifest(a: argparse.Namespace) -> None:
    """eval of a compress-dir output: the figures its manifest recorded (nothing is coded)."""
    from .dataset import read_manifest, summarize

    s = summarize(read_manifest(a.folder))
    print(f"images     {s['images']} ({s['failed']} failed)")
    if s["images"]:
        print(f"size       {s['bytes']} bytes, {s['bpp']:.4f} bpp (mean)")
        measured = s["psnr"] is not None
        print(f"PSNR       {s['psnr']:.3f} dB (mean)" if measured
              else "PSNR       not measured (compress-dir --metrics)")
        if measured:
            print(f"MS-SSIM    {s['ms_ssim']:.5f} (mean)")
    print(f"time       {s['seconds']:.1f} s (the images' own times, summed)")
    if a.json:
        Path(a.json).write_text(json.dumps(s, indent=1))
        print(f"\nwrote {a.json}")


def _compress_dir(a: argparse.Namespace) -> None:
    from .dataset import MANIFEST, CompressOptions, compress_dir

    options = CompressOptions(a.quality, a.model, a.metrics, a.device, a.precision,
                              a.max_bytes)
    workers = _workers(a)
    manifest = Path(a.output) / MANIFEST
    _run_dir(lambda: compress_dir(a.input, a.output, options, workers), "compressed",
             f"manifest   {manifest}", f"their errors are in {manifest}")


def _decompress_dir(a: argparse.Namespace) -> None:
    from .dataset import decompress_dir

    workers = _workers(a)
    _run_dir(lambda: decompress_dir(a.input, a.output, workers, a.device, a.precision,
                                    rectifier=not a.no_rectifier),
             "decoded", f"images     {a.output}", "the first ones are listed above")


def _workers(a: argparse.Namespace):
    from .dataset import BATCH_IMAGES, Workers

    return Workers(a.ray, a.workers, BATCH_IMAGES if a.batch is None else a.batch)


def _run_dir(run, done: str, where: str, errors_at: str) -> None:
    """A compress-dir or decompress-dir run and its report; exit status 1 if a file failed."""
    try:
        s = run()
    except KeyboardInterrupt:
        print("finished files are kept: run the same command again to resume", file=sys.stderr)
        raise
    print(f"files      {s.files}: {s.done} {done}, {s.skipped} done before, "
          f"{len(s.failures)} failed")
    print(f"time       {s.seconds:.1f} s, {s.images_per_second:.2f} images/s")
    print(where)
    for path, error in s.failures[:10]:
        print(f"failed: {path}: {error}", file=sys.stderr)
    if s.failures:
        raise ValueError(f"{len(s.failures)} of {s.files} files failed ({errors_at})")


def _demo(a: argparse.Namespace) -> None:
    from skimage import data as samples

    codec = _codec(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    x = to_batch(samples.astronaut())[0]
    codec.compress(torch.rand(3, 64, 64))  # warm-up: load the model and its tables
    t0 = time.perf_counter()
    data = codec.compress(x)
    t1 = time.perf_counter()
    x_hat = codec.decompress(data)
    t2 = time.perf_counter()
    (out / "astronaut.nic").write_bytes(data)
    save_png(x_hat, out / "astronaut_decoded.png")
    h, w = x.shape[1:]
    device = x_hat.device
    print(f"image      scikit-image astronaut, {w}x{h}, model {codec.model_name}, "
          f"quality {codec.quality:g}")
    print(f"device     {device} ({describe(codec.precision, device)}), "
          f"entropy coder {codec.coder_backend(device)}")
    print(f"stream     {out / 'astronaut.nic'}: {len(data)} bytes, "
          f"{8 * len(data) / (h * w):.4f} bpp")
    print(f"decoded    {out / 'astronaut_decoded.png'}")
    print(f"PSNR       {psnr(x_hat.cpu(), x):.2f} dB")
    print(f"MS-SSIM    {ms_ssim(x_hat.cpu(), x):.4f}")
    print(f"encode     {(t1 - t0) * 1000:.0f} ms")
    print(f"decode     {(t2 - t1) * 1000:.0f} ms")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine", description="nicengine image codec")
    sub = p.add_subparsers(dest="command", required=True)
    models = sorted(zoo.shipped_models()) + sorted(zoo.zoo_models())

    c = sub.add_parser("compress", help="compress an image file")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--drop-alpha", action="store_true", help="discard an alpha channel")
    c.add_argument("--refine", choices=METHODS, help="refine the latents first (engine.Refine)")
    c.add_argument("--iterations", type=int,
                   help=f"refinement steps (with --refine; default {Refine.iterations})")
    budget = c.add_mutually_exclusive_group()
    budget.add_argument("--max-bytes", type=int, help="the highest quality (or level) that fits "
                        "in this many bytes; with --refine, refined to fill it")
    budget.add_argument("--target-bpp", type=float, help="the same, in bits per pixel")
    c.set_defaults(run=_compress)

    d = sub.add_parser("decompress", help="decode a stream to PNG")
    d.add_argument("input")
    d.add_argument("output")
    d.set_defaults(run=_decompress)

    i = sub.add_parser("info", help="print a stream's header")
    i.add_argument("input")
    i.set_defaults(run=_info)

    e = sub.add_parser("eval", help="rate-distortion of a folder of images")
    e.add_argument("folder", help="images, or compress-dir's output (its manifest's figures)")
    e.add_argument("--json", help="write per-image and mean results to this file")
    e.add_argument("--limit", type=int, default=None, help="first N images only")
    e.set_defaults(run=_eval)

    m = sub.add_parser("demo", help="compress a sample photo and report the figures")
    m.add_argument("--out", default="out")
    m.set_defaults(run=_demo)

    cd = sub.add_parser("compress-dir", help="compress a folder of images (resumable)")
    cd.add_argument("input")
    cd.add_argument("output")
    cd.add_argument("--metrics", action="store_true", help="record PSNR and MS-SSIM too")
    cd.add_argument("--max-bytes", type=int, help="each image at the highest quality that fits "
                    "in this many bytes (or level)")
    cd.set_defaults(run=_compress_dir)

    dd = sub.add_parser("decompress-dir", help="decode compress-dir's output to PNG")
    dd.add_argument("input")
    dd.add_argument("output")
    dd.set_defaults(run=_decompress_dir)
    for s in (d, dd):
        s.add_argument("--no-rectifier", action="store_true",
                       help="decode without the weights' quantization rectifier (faster)")

    for s in (cd, dd):
        s.add_argument("--ray", metavar="ADDRESS", help="run on Ray: local (a cluster started "
                       "for the run), auto or an address (join one)")
        s.add_argument("--workers", type=int, help="processes or Ray actors (default: one per "
                       "GPU of a Ray cluster, else one per CPU)")
        s.add_argument("--batch", type=int,
                       help="images per worker call (default: engine.dataset.BATCH_IMAGES)")

    for s in (c, e, m, cd):
        s.add_argument("--model", choices=models, default=DEFAULT_MODEL,
                       help="shipped model to encode with, or CompressAI's published model by "
                       "name (fetched into the cache on first use)")
    for s in (c, m, cd):
        s.add_argument("-q", "--quality", type=float, default=DEFAULT_QUALITY)
    e.add_argument("-q", "--quality", type=float, nargs="+", default=[DEFAULT_QUALITY])
    for s in (c, d, e, m, cd, dd):
        s.add_argument("--device", default="auto", help=f"{DEVICES} (default: auto)")
        s.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="of g_a and g_s; auto: bfloat16 on CPUs with AVX512_BF16 "
                       "(or AMX), else float32")
    for s in (c, d):
        s.add_argument("--weights", help="a weights file to use instead of the shipped models")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    a = parser.parse_args(argv)  # usage errors: one line, exit status 2
    if getattr(a, "iterations", None) is not None and not a.refine:
        parser.error("--iterations needs --refine")
    if not hasattr(a, "weights"):
        a.weights = None
    try:
        a.run(a)
    except UsageError as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except (CodecError, ValueError, OSError) as err:  # OSError: missing, unreadable, unwritable
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _one_line(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    return " ".join(text.split())
