"""BD-rate and BD-PSNR of each refinement method against the unrefined models, over the zoo's
qualities, after 500 and 2000 iterations (the analogue of table 1 and figure B.1 of
Perugachi-Diaz et al., NeurIPS 2024).

    python benchmarks/sga_bd.py [--weights W1 W2 ...] [--at 500 2000] [--methods ...] [--write]

Each image is refined once, for the largest count; the result at a smaller count t is the best
true loss within the first t iterations, which is what a run of t iterations codes (the
temperature depends on t only). Rate: the models' likelihoods in bits per pixel; PSNR: float
pixels; both averaged over the images per model. The rate estimate of the unrefined latents is
checked against real codec streams (ratio reported). BD needs two or more models; with one, the
table gives the changes in bpp and PSNR. Output: results/sga_bd.{json,png}.
"""

from __future__ import annotations

import sga_common as common
import torch

from engine import Codec
from engine.bjontegaard import bd_psnr, bd_rate
from engine.refine import METHODS

NAME = "sga_bd"


def main() -> None:
    p = common.parser(__doc__, 2000, METHODS)
    p.add_argument("--at", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--name", default=NAME,
                   help="results/NAME.{json,png} and the RESULTS.md section to write")
    args = p.parse_args()
    args.iterations = max(args.at)
    common.setup(args)
    models, images = common.load_models(args), common.load_images(args)
    points = {"unrefined": []}  # curve name -> [{bpp, psnr}] per model
    stream_ratio = []
    for name, model in models:
        base = None
        for method in args.methods:
            runs = common.refine_all(model, images, common.refine_for(args, method), args)
            base = common.mean_best(runs, 0)
            for t in args.at:
                points.setdefault(f"{method}@{t}", []).append(common.mean_best(runs, t))
        points["unrefined"].append(base)
        stream_ratio.append(actual_bpp(model, images, args) / base["bpp"])
        print(f"{name}: unrefined bpp {base['bpp']:.4f} PSNR {base['psnr']:.3f}", flush=True)
    rows = deltas(points, args)
    pairs = pairwise(points, args)
    common.save_json(args, args.name, {"weights": [n for n, _ in models],
                                  "images": [n for n, _ in images], "points": points,
                                  "bd": rows, "ssl_vs_atanh": pairs,
                                  "stream_over_estimate": stream_ratio})
    plot(args, points)
    lines = [common.describe(args, models, images), "",
             "Real stream size / estimated rate of the unrefined latents, per model: "
             + ", ".join(f"{r:.4f}" for r in stream_ratio) + ".", ""]
    if len(models) > 1:
        lines += ["Against the unrefined models (negative BD-rate: fewer bits at equal PSNR):",
                  "", *common.table(["method", "iterations", "BD-rate", "BD-PSNR"],
                                    [[m, str(t), f"{r:+.2f} %", f"{q:+.3f} dB"]
                                     for m, t, r, q in rows])]
        if pairs:
            lines += ["", "SSL against atanh (the paper's table 1):", "",
                      *common.table(["iterations", "BD-rate", "BD-PSNR"],
                                    [[str(t), f"{r:+.2f} %", f"{q:+.3f} dB"]
                                     for t, r, q in pairs])]
    else:
        lines += common.table(["method", "iterations", "bpp change", "PSNR change"],
                              [[m, str(t), f"{r:+.4f}", f"{q:+.3f} dB"] for m, t, r, q in rows])
    lines += ["", f"![R-D curves](results/{args.name}.png)"]
    title = "SGA+: BD-rate against the unrefined models"
    if args.name != NAME:
        title += f" ({args.name})"
    common.finish(args, args.name, title, "\n".join(lines))


def _curve(points: list[dict]) -> tuple[list[float], list[float]]:
    return [p["bpp"] for p in points], [p["psnr"] for p in points]


def deltas(points: dict, args) -> list[tuple[str, int, float, float]]:
    """(method, t, BD-rate %, BD-PSNR dB), or with one model (method, t, d bpp, d PSNR)."""
    ref = points["unrefined"]
    rows = []
    for method in args.methods:
        for t in args.at:
            test = points[f"{method}@{t}"]
            if len(ref) > 1:
                rows.append((method, t, bd_rate(*_curve(ref), *_curve(test)),
                             bd_psnr(*_curve(ref), *_curve(test))))
            else:
                rows.append((method, t, test[0]["bpp"] - ref[0]["bpp"],
                             test[0]["psnr"] - ref[0]["psnr"]))
    return rows


def pairwise(points: dict, args) -> list[tuple[int, float, float]]:
    if not {"ssl", "atanh"} <= set(args.methods) or len(points["unrefined"]) < 2:
        return []
    return [(t, bd_rate(*_curve(points[f"atanh@{t}"]), *_curve(points[f"ssl@{t}"])),
             bd_psnr(*_curve(points[f"atanh@{t}"]), *_curve(points[f"ssl@{t}"])))
            for t in args.at]


@torch.no_grad()
def actual_bpp(model, images, args) -> float:
    """Mean bpp of the real unrefined streams."""
    codec = Codec(weights=model, device=args.device)
    sizes = [8 * len(codec.compress(x.to(args.device))) / (x.shape[1] * x.shape[2])
             for _, x in images]
    return sum(sizes) / len(sizes)


def plot(args, points: dict) -> None:
    fig, axes = common.figure(1, len(args.at))
    for ax, t in zip(axes[0], args.at, strict=True):
        ax.plot(*_curve(points["unrefined"]), "k-o", label="unrefined", markersize=3)
        for method in args.methods:
            ax.plot(*_curve(points[f"{method}@{t}"]), marker=".", label=method,
                    linestyle="--" if method.endswith("3") else "-", linewidth=1)
        ax.set_title(f"{t} iterations")
        ax.set_xlabel("bpp")
        ax.set_ylabel("PSNR (dB)")
    axes[0, 0].legend(fontsize=7)
    common.save_figure(args, fig, args.name)


if __name__ == "__main__":
    main()
