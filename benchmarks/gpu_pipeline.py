"""The whole codec on the GPU: end-to-end speed against CompressAI, joint autoregressive coding,
and cross-device decoding.

    python benchmarks/gpu_pipeline.py [--repeat 3] [--write]            # speed, on CUDA
    python benchmarks/gpu_pipeline.py --context [--write]               # mbt2018's wavefront
    python benchmarks/gpu_pipeline.py --cross-device [--write]          # Kodak, GPU <-> CPU

Speed: images and megapixels per second of compress and of decompress at 768x512 and 1920x1080,
batches of 1 and 16, in float32 and bfloat16: `Codec.compress_batch` from images on the GPU to
bytes on the host, `decompress_batch` from those bytes to images on the GPU (networks, kernels
and the CUDA coder on the GPU). Beside it, when it imports, CompressAI's `mbt2018_mean`
(`compress` / `decompress`, its networks on the same GPU, its coder on the CPU, float32). Both
are N=128, M=192 mean-scale hyperpriors with random weights (the zoo's architecture; timing
only); ours best of --repeat, CompressAI's one run after a warm-up (its coder is slow),
synchronised. Goals on an H100: 1920x1080 compress and decompress each within 10 ms at batch 1;
at least 10x CompressAI end to end.

Joint autoregressive coding: CompressAI's mbt2018 architecture (N=M=192) with random weights,
its integer context model calibrated on `engine.zoo.compressai.calibration_images`, one
768x512 image (Kodak's size: 141 wavefront steps): compress and decompress time (best of
--repeat), each step one fused Triton kernel (`kernels/wavefront_step.py`); and beside it the
per-layer steps of before (the reference over one exact convolution per layer,
`kernels.dispatch.int_conv`: Triton on the GPU).

Cross-device: for every shipped model and level, the Kodak images are encoded on one device (one
batch) and decoded on both, in both directions, in float32. An image is correct when its two
decodings agree to within float noise (PSNR between them above AGREE_DB: a stream decoded with
other table indexes than it was encoded with desynchronises and lands far below), wrong when
they do not, failed when decoding raises; failures are counted, not fatal.

Each row goes to the session record (benchmarks/gpu_record.py) as soon as it is measured.
`--device cpu --toy` and `--devices cpu cpu --toy` run the same code without a GPU, at toy sizes
(gpu_session.sh --dry-run: a test of the script, not of the claims; --context --toy: N=16,
M=24, 128x64).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from gpu_record import describe, machine, record  # noqa: E402
from results_md import write_section  # noqa: E402
from timing import best_of  # noqa: E402

from engine import Codec, zoo  # noqa: E402
from engine.images import to_batch  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from engine.models import (  # noqa: E402
    ContextConfig,
    JointAutoregressive,
    MeanScaleHyperprior,
    ModelConfig,
    integer_context,
)
from engine.zoo.compressai import calibration_images  # noqa: E402
from nicengine_kernels.dispatch import int_conv  # noqa: E402
from nicengine_kernels.wavefront_step_reference import wavefront_step_reference  # noqa: E402

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"
SIZES = {"768x512": (512, 768), "1920x1080": (1080, 1920), "128x64": (64, 128)}
# (size, batch) in priority order: the goal's 1080p batch 1 first, CompressAI's slowest last.
CASES = [("1920x1080", 1), ("768x512", 1), ("768x512", 16), ("1920x1080", 16)]
TOY_CASES = [("128x64", 2)]
TOY_CROP = (96, 128)  # --cross-device --toy: the top-left corner of each image
PRECISIONS = ("float32", "bfloat16")
AGREE_DB = 45.0
SPEED, CONTEXT, CROSS = "gpu_pipeline", "gpu_context", "cross_device"  # rows in the record
Sync = Callable[[], None] | None  # torch.cuda.synchronize on a GPU


# --- speed ---------------------------------------------------------------------------------------


def ours(device: str, precision: str) -> Codec:
    """This engine with a random-weight N=128, M=192 mean-scale hyperprior."""
    torch.manual_seed(0)
    model = MeanScaleHyperprior(ModelConfig(128, 192)).eval().requires_grad_(False)
    return Codec(weights=model, device=device, precision=precision)


def compressai_model(device: str) -> torch.nn.Module | str:
    """CompressAI's mbt2018_mean (N=128, M=192, random weights) on `device`, or why not."""
    try:
        from vs_compressai import import_compressai

        _, mbt2018_mean = import_compressai()
    except Exception as e:  # an absent or broken CompressAI only drops its columns
        return f"CompressAI does not import: {type(e).__name__}: {e}"
    torch.manual_seed(0)
    model = mbt2018_mean(quality=3, pretrained=False).eval().to(device)
    model.update(force=True)
    return model


def speed(device: str, repeat: int, toy: bool) -> list[dict]:
    """Rows of this engine's figures, each recorded as soon as it is measured, and after them
    CompressAI's at the same size and batch (its coder, on the CPU, is much slower)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    theirs = compressai_model(device)
    setup = {"kind": "setup", "device": device, "repeat": repeat,
             "coder": Codec(device=device).coder_backend(device),
             "compressai": theirs if isinstance(theirs, str) else "mbt2018_mean"}
    rows = [setup]
    record(SPEED, setup)
    print(setup)
    codecs = {p: ours(device, p) for p in PRECISIONS}
    for size, b in TOY_CASES if toy else CASES:
        h, w = SIZES[size]
        x = torch.rand(b, 3, h, w, device=device)
        case = {"size": size, "batch": b, "pixels": b * h * w}
        measured = [{"kind": "ours", **case, "precision": p,
                     **time_ours(codec, x, device, repeat, sync)} for p, codec in codecs.items()]
        if not isinstance(theirs, str):
            measured.append({"kind": "compressai", **case, **time_theirs(theirs, x, sync)})
        for row in measured:
            record(SPEED, row)
        rows += measured
        for row in measured[: len(codecs)]:
            print(format_speed(row, rows), flush=True)
    return rows


@torch.inference_mode()
def time_ours(codec: Codec, x: torch.Tensor, device: str, repeat: int, sync: Sync) -> dict:
    data = codec.compress_batch(x)
    return {"bytes": sum(map(len, data)) / len(data),
            "compress": best_of(lambda: codec.compress_batch(x), repeat, sync),
            "decompress": best_of(lambda: codec.decompress_batch(data, device), repeat, sync)}


@torch.inference_mode()
def time_theirs(model: torch.nn.Module, x: torch.Tensor, sync: Sync) -> dict:
    """One timed run after a warm-up: CompressAI's coder is slow."""
    out = model.compress(x)
    return {"compress": best_of(lambda: model.compress(x), 1, sync),
            "decompress": best_of(lambda: model.decompress(out["strings"], out["shape"]), 1,
                                  sync)}


def format_speed(r: dict, rows: list[dict]) -> str:
    """A row of ours; CompressAI's columns from its row of the same size and batch, if any (and
    beside float32 only, its precision)."""
    cai = next((c for c in rows if c["kind"] == "compressai" and c["size"] == r["size"]
                and c["batch"] == r["batch"]), None) if r["precision"] == "float32" else None
    cells = [r["size"], str(r["batch"]), r["precision"]]
    for op in ("compress", "decompress"):
        t = r[op]
        cells += [f"{1e3 * t / r['batch']:.2f}", f"{r['batch'] / t:.1f}",
                  f"{r['pixels'] / t / 1e6:.0f}"]
        cells += [f"{r['batch'] / cai[op]:.1f}", f"{cai[op] / t:.1f}x"] if cai else ["-", "-"]
    total = "-"
    if cai:
        total = f"{(cai['compress'] + cai['decompress']) / (r['compress'] + r['decompress']):.1f}x"
    return "| " + " | ".join([*cells, total]) + " |"


def speed_table(rows: list[dict], where: dict) -> str:
    setup = next((r for r in rows if r["kind"] == "setup"), {})
    head = ["size", "batch", "precision"]
    for op in ("compress", "decompress"):
        head += [f"{op}: ms/image", "images/s", "MP/s", "CompressAI images/s", "ratio"]
    lines = [f"{describe(where)}. Command: `bash benchmarks/gpu_session.sh` (its pipeline "
             "step: `python benchmarks/gpu_pipeline.py`). Both N=128, M=192 with random "
             f"weights; ours: best of {setup.get('repeat', '?')} synchronised runs, CompressAI's: "
             "one after a warm-up; from images on the device to bytes on the host and back; "
             "entropy coder: "
             f"{setup.get('coder', '?')}; CompressAI: {setup.get('compressai', '?')} "
             "(float32, its networks on the same device); ratio = CompressAI's time / ours.",
             "", "| " + " | ".join([*head, "end-to-end ratio"]) + " |",
             "|" + " --- |" * (len(head) + 1)]
    return "\n".join(lines + [format_speed(r, rows) for r in rows if r["kind"] == "ours"])


# --- joint autoregressive coding -----------------------------------------------------------------


def context_model(toy: bool) -> JointAutoregressive:
    """mbt2018 with random weights (N=M=192; toy: N=16, M=24), its integer context model
    calibrated on the CPU, as importing a checkpoint does."""
    torch.manual_seed(0)
    config = ContextConfig(16, 24) if toy else ContextConfig(192, 192)
    model = JointAutoregressive(config).eval().requires_grad_(False)
    model.attach_integer_hyper(model.calibrate(calibration_images()))
    return model


@contextmanager
def per_layer_steps() -> Iterator[None]:
    """Wavefront steps as they ran before the fused kernel: one exact convolution per layer."""
    fused = integer_context.wavefront_step
    integer_context.wavefront_step = partial(wavefront_step_reference, conv=int_conv)
    try:
        yield
    finally:
        integer_context.wavefront_step = fused


def context_coding(device: str, repeat: int, toy: bool) -> list[dict]:
    """Compress and decompress one image with the fused steps, then with the per-layer ones;
    each row recorded as soon as it is measured."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    model = context_model(toy)
    size = "128x64" if toy else "768x512"
    h, w = SIZES[size]
    x = torch.rand(1, 3, h, w, device=device)
    codec = Codec(weights=model, device=device, precision="float32")
    case = {"size": size, "N": model.config.N, "M": model.config.M, "device": device,
            "steps": integer_context.wavefront_steps(h // 16, w // 16)}
    rows = []
    for path in ("fused", "per-layer"):
        if path == "fused":
            row = {"path": path, **case, **time_ours(codec, x, device, repeat, sync)}
        else:
            with per_layer_steps():
                row = {"path": path, **case, **time_ours(codec, x, device, repeat, sync)}
        record(CONTEXT, row)
        rows.append(row)
        print(format_context(row), flush=True)
    return rows


def format_context(r: dict) -> str:
    ms = {op: 1e3 * r[op] for op in ("compress", "decompress")}
    return (f"| {r['path']} | {r['size']} | {r['steps']} | {ms['compress']:.1f} | "
            f"{ms['decompress']:.1f} | {1e3 * ms['decompress'] / r['steps']:.0f} | "
            f"{r['bytes']:.0f} |")


def context_table(rows: list[dict], where: dict) -> str:
    first = rows[0]
    lines = [f"{describe(where)}. Command: `bash benchmarks/gpu_session.sh` (its context step: "
             "`python benchmarks/gpu_pipeline.py --context`). mbt2018, N="
             f"{first['N']}, M={first['M']}, random weights, its integer context model "
             f"calibrated on calibration_images(); one random image on {first['device']}, "
             "float32, best of the timed runs after a warm-up; fused: one Triton kernel per "
             "wavefront step; per-layer: one exact convolution per layer, as before it.", "",
             "| path | size | wavefront steps | compress (ms) | decompress (ms) | "
             "decompress / steps (us) | bytes |", "|" + " --- |" * 7]
    return "\n".join(lines + [format_context(r) for r in rows])


# --- cross-device decoding -----------------------------------------------------------------------


def cross_device(devices: tuple[str, str], folder: Path, limit: int, toy: bool) -> list[dict]:
    """Every shipped model and level, encoded on each of `devices` and decoded on both."""
    images = sorted(folder.glob("*.png"))[:limit]
    if not images:
        raise SystemExit(f"no PNG images in {folder}")
    if toy:
        images = [to_batch(p)[..., : TOY_CROP[0], : TOY_CROP[1]] for p in images]
    rows = []
    # The default model first: a step cut off by its time limit keeps the rows it finished.
    models = sorted(zoo.shipped_models().items(), key=lambda m: m[0] != zoo.DEFAULT_MODEL)
    for name, levels in models:
        for q in levels:
            codecs = {d: Codec(q, d, model=name, precision="float32") for d in set(devices)}
            # One direction when both are the same device (a dry run's "cpu cpu").
            for enc, dec in dict.fromkeys([devices, devices[::-1]]):
                row = {"model": name, "quality": q, "encode": enc, "decode": dec,
                       "images": len(images), **agreement(codecs[enc], codecs[dec], images)}
                record(CROSS, row)
                rows.append(row)
                print(format_cross(row), flush=True)
    return rows


def agreement(encoder: Codec, other: Codec, images: list[Path | torch.Tensor]) -> dict:
    """The images encoded by `encoder`, decoded by it and by `other`: how many agree."""
    try:
        streams = encoder.compress_batch(images)
    except Exception as e:  # counted: the harness must reach every level
        return {"correct": 0, "wrong": 0, "failed": len(images), "errors": [_error(e)]}
    same = decode_each(encoder, streams)
    cross = same if other is encoder else decode_each(other, streams)
    between = [psnr(a.cpu(), b.cpu()) for a, b in zip(same, cross, strict=True)
               if not isinstance(a, str) and not isinstance(b, str)]
    errors = sorted({r for r in same + cross if isinstance(r, str)})
    return {"correct": sum(db > AGREE_DB for db in between),
            "wrong": sum(db <= AGREE_DB for db in between),
            "failed": len(images) - len(between), "errors": errors[:3],
            "lowest_db": min(between, default=None),
            "bytes": sum(map(len, streams)) / len(streams)}


def decode_each(codec: Codec, streams: list[bytes]) -> list[torch.Tensor | str]:
    """Every stream decoded on the codec's device (one batch; one at a time if that raises),
    or the error it raised."""
    try:
        return codec.decompress_batch(streams)
    except Exception:  # find which streams fail
        out = []
        for s in streams:
            try:
                out.append(codec.decompress(s))
            except Exception as e:  # counted, not fatal
                out.append(_error(e))
        return out


def _error(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:160]}"


def format_cross(r: dict) -> str:
    low = "-" if r.get("lowest_db") is None else f"{r['lowest_db']:.1f} dB"
    errors = "; ".join(r["errors"]) or "-"
    return (f"| {r['model']} | {r['quality']} | {r['encode']} | {r['decode']} | "
            f"{r['correct']} of {r['images']} | {r['wrong']} | {r['failed']} | {low} | "
            f"{errors} |")


def cross_table(rows: list[dict], where: dict) -> str:
    lines = [f"{describe(where)}. Command: `bash benchmarks/gpu_session.sh` (its cross step: "
             "`python benchmarks/gpu_pipeline.py --cross-device`). Every shipped model and "
             "level, float32; correct: the cross-device decoding within "
             f"{AGREE_DB:.0f} dB PSNR of the same-device one; failed: decoding raised.", "",
             "| model | quality | encoded on | decoded on | correct | wrong | failed | "
             "lowest PSNR between the two | errors |", "|" + " --- |" * 9]
    return "\n".join(lines + [format_cross(r) for r in rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cuda", help="speed: where both codecs run")
    p.add_argument("--toy", action="store_true",
                   help="a test run: one small size; cross-device: small crops of the images")
    p.add_argument("--context", action="store_true",
                   help="joint autoregressive coding (mbt2018) instead of the speed rows")
    p.add_argument("--cross-device", action="store_true")
    p.add_argument("--devices", nargs=2, default=["cuda", "cpu"])
    p.add_argument("--images", type=Path, default=KODAK, help="cross-device: the Kodak folder")
    p.add_argument("--limit", type=int, default=24, help="cross-device: the first N images")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    if a.cross_device:
        text = cross_table(cross_device(tuple(a.devices), a.images, a.limit, a.toy), machine())
        section = (CROSS, "Cross-device decoding (GPU <-> CPU)")
    else:
        if a.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run with --device cpu --toy to test the script")
        if a.context:
            text = context_table(context_coding(a.device, a.repeat, a.toy), machine())
            section = (CONTEXT, "Joint autoregressive coding on the GPU")
        else:
            text = speed_table(speed(a.device, a.repeat, a.toy), machine())
            section = (SPEED, "End to end on the GPU")
    print("\n" + text)
    if a.write:
        write_section(*section, text)


if __name__ == "__main__":
    main()
