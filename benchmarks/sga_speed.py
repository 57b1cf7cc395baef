"""Speed of latent refinement: seconds per iteration and per 500 iterations for one Kodak image
(768x512), on the CPU and the GPU, and the SGA+ rounding step alone (`nicengine_kernels.sga`: fused
Triton kernel against eager PyTorch; goal on an H100: at least 3x).

    python benchmarks/sga_speed.py --weights W.safetensors [--devices cpu cuda]
        [--methods ssl atanh ssl3 ste] [--measure 20] [--full] [--write]

Per iteration: the median over --measure timed iterations (after 3 warm-up ones) of one
refinement step including its true-loss evaluation; per 500: that times 500, or with --full a
measured `Codec.compress(image, refine=Refine(iterations=500))` (analysis, refinement, coding).
Rounding step: forward and backward on a (1, M, 32, 48) latent and a batch of 8, CUDA only
(under the Triton interpreter the kernel's time means nothing). Output: results/sga_speed.json.
"""

from __future__ import annotations

import time

import sga_common as common
import torch

from engine import Codec
from engine.refine import Refine, refine_latents
from nicengine_kernels.dispatch import sga_round
from nicengine_kernels.sga_reference import sga_round_reference

NAME = "sga_speed"


def main() -> None:
    p = common.parser(__doc__, 500, ("ssl", "atanh", "ssl3", "ste"))
    p.add_argument("--devices", nargs="+",
                   default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    p.add_argument("--measure", type=int, default=20)
    p.add_argument("--full", action="store_true", help="also time a whole 500-iteration encode")
    p.set_defaults(limit=1)
    args = p.parse_args()
    common.setup(args)
    images = common.load_images(args)
    image_name, x = images[0]
    rows, kernel_rows, out = [], [], {}
    for device in args.devices:
        args.device = device
        name, model = common.load_models(args)[0]
        for method in args.methods:
            per_it = step_seconds(model, x.to(device), method, args.measure)
            full = encode_seconds(model, x.to(device), method) if args.full else None
            out[f"{device} {method}"] = {"s_per_it": per_it, "encode_500_s": full}
            rows.append([device, method, f"{per_it:.4f}", f"{500 * per_it:.1f}",
                         "" if full is None else f"{full:.1f}"])
            print(rows[-1], flush=True)
        if torch.device(device).type == "cuda":
            for method in ("atanh", "ssl", "ssl3"):
                for shape in ((1, model.config.M, 32, 48), (8, model.config.M, 32, 48)):
                    ref, fused = rounding_seconds(method, shape, device)
                    kernel_rows.append([method, "x".join(map(str, shape)),
                                        f"{ref * 1e6:.1f}", f"{fused * 1e6:.1f}",
                                        f"{ref / fused:.2f}"])
                    print(kernel_rows[-1], flush=True)
    args.device = args.devices[-1]
    common.save_json(args, NAME, {"image": image_name, "size": list(x.shape[1:]),
                                  "steps": out, "rounding": kernel_rows})
    lines = [common.describe(args, [(name, model)], images), "",
             *common.table(["device", "method", "s / iteration", "s / 500 (x500)",
                            "s / 500-iteration encode"], rows)]
    if kernel_rows:
        lines += ["", "Rounding step, forward + backward (microseconds):", "",
                  *common.table(["method", "shape", "eager PyTorch", "Triton", "speed-up"],
                                kernel_rows)]
    common.finish(args, NAME, "SGA+: refinement speed", "\n".join(lines))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_seconds(model, x: torch.Tensor, method: str, measure: int) -> float:
    """Median seconds of one refinement iteration (step and true-loss evaluation)."""
    refine = Refine(method=method, iterations=measure + 3, progress=False,
                    lam=model.info.get("lambda", 0.013))
    _, history = refine_latents(model, x[None], refine)
    gaps = history.seconds.diff()[3:]
    return float(gaps.median())


def encode_seconds(model, x: torch.Tensor, method: str) -> float:
    codec = Codec(weights=model, device=x.device)
    codec.compress(x[:, :64, :64])  # warm-up: tables
    _sync(x.device)
    start = time.perf_counter()
    codec.compress(x, refine=Refine(method=method, iterations=500, progress=False,
                                    lam=model.info.get("lambda", 0.013)))
    _sync(x.device)
    return time.perf_counter() - start


def rounding_seconds(method: str, shape: tuple[int, ...], device: str, reps: int = 50
                     ) -> tuple[float, float]:
    """(eager reference, fused kernel) seconds of one forward + backward, noise drawn inside."""
    v = (torch.randn(shape, device=device) * 3).requires_grad_(True)
    grad = torch.randn(shape, device=device)
    times = []
    for fn in (sga_round_reference, sga_round):
        for i in range(reps + 5):
            if i == 5:
                torch.cuda.synchronize()
                start = time.perf_counter()
            fn(v, method, 0.5).backward(grad)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) / reps)
    return times[0], times[1]


if __name__ == "__main__":
    main()
