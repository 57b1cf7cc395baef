"""CompressAI's own models against the same checkpoints imported into this engine, side by side
in one run, on all 24 Kodak images.

    python benchmarks/compressai_import.py [--steps 300] [--write]

For each architecture (bmshj2018-hyperprior and mbt2018-mean at N=128, M=192, CompressAI's zoo
shapes for qualities 1-5; bmshj2018-factorized too), twice: with CompressAI's random initial
weights, and after --steps steps of training with CompressAI's own loop (its examples/train.py:
RateDistortionLoss at lambda 0.0067, its quality-3 lambda; Adam on the network, a second Adam on
the quantiles with the aux loss, gradient clipping at 1) on random 128x128 crops of
../shared/data/train, 2 threads. CompressAI update()s the model and saves it as its training
example does ({"epoch", "state_dict", "loss", "optimizer", "aux_optimizer", "lr_scheduler"});
`python -m engine.zoo import-compressai CKPT OUT --arch ARCH --quality 3` imports it. Then, image
by image, CompressAI's compress/decompress and this engine's (`engine.Codec(weights=OUT)`) run
back to back: PSNR on 8-bit RGB of the whole decoded image against the original (as CompressAI's
eval_model computes it), stream size (ours with its header and CRC; CompressAI's strings alone)
and the time of each call.

Padding: CompressAI's eval_model pads zeros around the image to a multiple of 64 (centered) and
crops after decoding, which this script does for it; this engine pads bottom and right by
repeating the edge and crops. Kodak's images are 768x512 and 512x768: neither side pads.

CompressAI is installed without its dependencies, and without torchvision (PyPI's does not load
beside this CPU torch; CompressAI imports it only to fill a registry of transforms, so
`vs_compressai.import_compressai` puts an empty stand-in module in its place):
    pip install --no-deps compressai==1.2.8 torch_geometric==2.8.1 pytorch_msssim==1.0.0 \
        einops xxhash psutil
Checkpoints and weights files go to --workdir (trained checkpoints are reused when present).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))

from results_md import commit, cpu, write_section  # noqa: E402
from vs_compressai import import_compressai as load_compressai  # noqa: E402

from engine import Codec  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.metrics import psnr  # noqa: E402
from engine.train.data import RandomCrops  # noqa: E402
from engine.zoo import load_weights  # noqa: E402
from engine.zoo.compressai import ZOO_LAMBDAS, convert_state_dict, read_checkpoint  # noqa: E402

ARCHS = ("bmshj2018-hyperprior", "mbt2018-mean", "bmshj2018-factorized", "mbt2018",
         "cheng2020-anchor", "cheng2020-attn")
NOTES = (
    "CompressAI was installed with `pip install --no-deps compressai==1.2.8 "
    "torch_geometric==2.8.1 pytorch_msssim==1.0.0 einops xxhash psutil` (what `import "
    "compressai` pulls in). PyPI's torchvision does not import beside this CPU build of torch; "
    "CompressAI imports it only to fill a registry of transforms, so an empty stand-in module "
    "takes its place (`vs_compressai.import_compressai`). A few hundred steps on 2 cores leave "
    "the trained models far from converged (18 to 20 dB): the rows show that the import is "
    "exact, not how good these architectures are. Besides the coded symbols, this engine's "
    "streams carry a header (28 bytes for an image coded in one stream) and 128 bytes of rANS lane "
    "states per coded stream. The float16 storage of "
    "weights files costs up to a few thousandths of a dB here; with the weights as float32 "
    "tensors no image's PSNR differs from CompressAI's in the fourth decimal. This engine's "
    "compress "
    "of the factorized model also evaluates its density for the rate estimate (tens of small "
    "tensor operations), which CompressAI's compress does not.")
QUALITY = 3  # N=128, M=192; lambda ZOO_LAMBDAS[3]
CONTEXT_ARCHS = {"mbt2018", "cheng2020-anchor", "cheng2020-attn"}


def compressai_model(arch: str):
    load_compressai()
    from compressai.zoo import image_models

    torch.manual_seed(0)
    return image_models[arch](quality=QUALITY, pretrained=False)


def train(net, steps: int, batch: int, lr: float, crop: int = 128) -> tuple:
    """CompressAI's training step (examples/train.py), `steps` times on random crop x crop
    training crops: (the last loss, the optimisers and scheduler, for the checkpoint)."""
    from compressai.losses import RateDistortionLoss

    net.train()
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    optimizer = torch.optim.Adam(main_params, lr=lr)
    aux_optimizer = torch.optim.Adam(aux_params, lr=1e-3)
    criterion = RateDistortionLoss(lmbda=ZOO_LAMBDAS[QUALITY])
    crops = RandomCrops(list_images(SHARED / "train"), crop, seed=0, length=steps * batch)
    start = time.perf_counter()
    for step in range(steps):
        x = torch.stack([crops[step * batch + i] for i in range(batch)])
        optimizer.zero_grad()
        aux_optimizer.zero_grad()
        loss = criterion(net(x), x)
        loss["loss"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        aux_loss = net.aux_loss()
        aux_loss.backward()
        aux_optimizer.step()
        if step % 25 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss['loss'].item():.4f} (bpp "
                  f"{loss['bpp_loss'].item():.3f}, mse {loss['mse_loss'].item():.5f}), aux "
                  f"{aux_loss.item():.1f}, {time.perf_counter() - start:.0f} s", flush=True)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    net.eval()
    return float(loss["loss"]), optimizer, aux_optimizer, scheduler


def checkpoint(arch: str, weights: str, a: argparse.Namespace) -> Path:
    """CompressAI's checkpoint of `arch` with random or trained weights, saved as its training
    example saves one (after update(), which fills the CDF buffers its coder needs)."""
    path = a.workdir / f"{arch}-{weights}.pth.tar"
    if path.exists() and weights == "trained":
        return path
    net = compressai_model(arch)
    if weights == "trained":
        print(f"training {arch} for {a.steps} steps", flush=True)
        loss, optimizer, aux_optimizer, scheduler = train(net, a.steps, a.batch, a.lr, a.crop)
        record = {"epoch": 0, "loss": loss, "optimizer": optimizer.state_dict(),
                  "aux_optimizer": aux_optimizer.state_dict(),
                  "lr_scheduler": scheduler.state_dict()}
    else:
        record = {"epoch": 0}
    net.eval().update(force=True)
    a.workdir.mkdir(parents=True, exist_ok=True)
    torch.save({**record, "state_dict": net.state_dict()}, path)
    return path


def import_command(ckpt: Path, arch: str) -> tuple[Path, str]:
    out = ckpt.with_suffix("").with_suffix(".safetensors")
    cmd = [sys.executable, "-m", "engine.zoo", "import-compressai", str(ckpt), str(out),
           "--arch", arch, "--quality", str(QUALITY)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"import failed: {done.stderr.strip()}")
    return out, done.stdout.strip()


def in_memory(state: dict, arch: str, weights_file: Path):
    """The checkpoint converted in memory (float32 tensors), with the weights file's integer
    network where it has one (the context models code only with theirs)."""
    model = convert_state_dict(state, arch)
    model.attach_integer_hyper(load_weights(weights_file).integer_hyper)
    return model


def compare(arch: str, ckpt: Path, weights_file: Path, images: list[Path]) -> dict:
    """Both codecs on every image, back to back; per-image figures."""
    from compressai.ops import compute_padding
    from compressai.zoo import image_models

    state, _ = read_checkpoint(ckpt)
    theirs = image_models[arch](quality=QUALITY)
    theirs.load_state_dict(state)
    theirs.eval().update()
    codecs = {"ours": Codec(weights=weights_file, precision="float32"),
              "ours32": Codec(weights=in_memory(state, arch, weights_file), precision="float32")}

    def cai(x):
        pad, unpad = compute_padding(*x.shape[2:], min_div=64)
        out = theirs.compress(F.pad(x, pad, mode="constant", value=0))
        t = time.perf_counter()
        x_hat = theirs.decompress(out["strings"], out["shape"])["x_hat"]
        return F.pad(x_hat, unpad), sum(len(s[0]) for s in out["strings"]), t

    def ours(codec, x):
        data = codec.compress(x)
        t = time.perf_counter()
        return codec.decompress(data), len(data), t

    rows = []
    with torch.inference_mode():
        warm = to_batch(images[0])
        cai(warm)
        for codec in codecs.values():
            ours(codec, warm)
        for path in images:
            x = to_batch(path)
            row = {"image": path.name, "pixels": x.shape[2] * x.shape[3]}
            for name, run in (("cai", cai), *((n, lambda x, c=c: ours(c, x))
                                             for n, c in codecs.items())):
                start = time.perf_counter()
                x_hat, size, mid = run(x)
                end = time.perf_counter()
                row[name] = {"psnr": psnr(x_hat, x), "bytes": size, "compress": mid - start,
                             "decompress": end - mid}
            rows.append(row)
    return rows


def summary(arch: str, weights: str, rows: list[dict]) -> str:
    def total(side, key):
        return sum(r[side][key] for r in rows)

    n = len(rows)
    d_psnr = max(abs(r["ours"]["psnr"] - r["cai"]["psnr"]) for r in rows)
    d32 = max(abs(r["ours32"]["psnr"] - r["cai"]["psnr"]) for r in rows)
    d_size = max(abs(r["ours"]["bytes"] / r["cai"]["bytes"] - 1) for r in rows)
    pixels = sum(r["pixels"] for r in rows)
    c_ratio = total("cai", "compress") / total("ours", "compress")
    d_ratio = total("cai", "decompress") / total("ours", "decompress")
    return (f"| {arch} | {weights} | {total('cai', 'psnr') / n:.3f} | "
            f"{total('ours', 'psnr') / n:.3f} | {d_psnr:.4f} ({d32:.4f}) | "
            f"{8 * total('cai', 'bytes') / pixels:.4f} | {8 * total('ours', 'bytes') / pixels:.4f} "
            f"| {total('ours', 'bytes') / total('cai', 'bytes') - 1:+.2%} ({d_size:.2%}) | "
            f"{total('cai', 'compress'):.1f} / {total('ours', 'compress'):.1f} ({c_ratio:.2f}x) | "
            f"{total('cai', 'decompress'):.1f} / {total('ours', 'decompress'):.1f} "
            f"({d_ratio:.2f}x) |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", choices=ARCHS, default=list(ARCHS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--crop", type=int, default=128, help="training crops' side, in pixels")
    p.add_argument("--images", type=int, default=24, help="how many Kodak images (all: 24)")
    p.add_argument("--workdir", type=Path, default=ROOT / "out" / "compressai_import")
    p.add_argument("--weights", nargs="+", choices=("random", "trained"),
                   default=["random", "trained"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-only", action="store_true",
                   help="make the trained checkpoints, measure nothing")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.train_only:
        for arch in a.archs:
            print(checkpoint(arch, "trained", a), flush=True)
        return
    compressai, _ = load_compressai()
    images = list_images(SHARED / "kodak")[: a.images]
    load_before = os.getloadavg()[0]
    lines, imports = [], []
    for arch in a.archs:
        for weights in a.weights:
            ckpt = checkpoint(arch, weights, a)
            weights_file, said = import_command(ckpt, arch)
            imports.append(f"`{said.split(': ', 1)[1]}`")
            print(said, flush=True)
            line = summary(arch, weights, compare(arch, ckpt, weights_file, images))
            print(line, flush=True)
            lines.append(line)
    text = "\n".join([
        f"Date {date.today()}, commit {commit()}, {cpu()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, CompressAI {compressai.__version__}; the first "
        f"{len(images)} Kodak images. Load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (the machine was shared: the times are of both "
        "codecs interleaved image by image, so their ratio is fairer than their values).",
        f"Command: `python benchmarks/compressai_import.py {' '.join(sys.argv[1:])}`. Training: "
        f"{a.steps} steps of CompressAI's loop, batch {a.batch} of {a.crop}x{a.crop} crops, "
        f"lr {a.lr:g}, "
        f"lambda {ZOO_LAMBDAS[QUALITY]}. The checkpoints are imported with "
        f"`python -m engine.zoo import-compressai CKPT OUT --arch ARCH --quality {QUALITY}` "
        "(float32 storage, the importer's default) and coded with "
        "`engine.Codec(weights=OUT, precision=\"float32\")`; the PSNR difference in brackets is "
        "with the checkpoint converted in memory (`convert_state_dict`) instead of the weights "
        "file. CompressAI pads as its eval_model does (zeros around, to "
        "a multiple of 64), this engine bottom and right by replication; Kodak's sizes are "
        "multiples of 64, so neither pads. PSNR is on 8-bit RGB of the whole decoded image, "
        "sizes are CompressAI's strings against this engine's whole stream (header and CRC "
        "included).",
        "",
        NOTES,
        "",
        "| architecture | weights | PSNR CompressAI (dB) | PSNR ours (dB) | max per-image "
        "abs. PSNR difference, dB (float32 tensors) | bpp CompressAI | bpp ours | size ours vs "
        "CompressAI, total (max per image) | compress s, CompressAI / ours (ratio) | "
        "decompress s, CompressAI / ours (ratio) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *lines, "", "The importer said: " + "; ".join(imports) + "."])
    print(text)
    if a.write:
        if set(a.archs) <= CONTEXT_ARCHS:  # a section of their own beside the hyperpriors'
            write_section("compressai_import_context", "CompressAI's context models imported "
                          "(CPU)", text)
        else:
            write_section("compressai_import", "CompressAI checkpoints imported (CPU)", text)


if __name__ == "__main__":
    main()
