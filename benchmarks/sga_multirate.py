"""Semi-multi-rate: one model refined for other R-D trade-offs (lambda) than it was trained for,
moving its stream along the R-D curve (the analogue of figure 3c of Perugachi-Diaz et al.,
NeurIPS 2024).

    python benchmarks/sga_multirate.py --weights W.safetensors [OTHER.safetensors ...]
        [--scales 0.25 0.5 1 2 4] [--methods ssl atanh] [--iterations 2000] [--write]

The first of --weights is refined with lambda = scale x its training lambda for every scale and
method; the others (other qualities of the zoo), with the first, give the unrefined R-D curve
to compare against. Rate: model likelihoods in bits per pixel; PSNR: float pixels; means over
the images. With two or more unrefined models the table adds each curve's BD-rate against
theirs over the overlapping range. Output: results/sga_multirate.{json,png}.
"""

from __future__ import annotations

import sga_common as common

from engine.bjontegaard import bd_psnr, bd_rate

NAME = "sga_multirate"


def main() -> None:
    p = common.parser(__doc__, 2000, ("ssl", "atanh"))
    p.add_argument("--scales", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0])
    args = p.parse_args()
    common.setup(args)
    models = common.load_models(args)
    name, model = models[0]
    images = common.load_images(args)
    lam0 = model.info.lam
    zoo = []
    for other_name, other in models:  # the unrefined curve: zero iterations
        runs = common.refine_all(other, images, common.refine_for(args, "ste", iterations=0),
                                 args)
        zoo.append({"name": other_name, **common.mean_best(runs, 0)})
    curves = {}
    for method in args.methods:
        curves[method] = []
        for scale in args.scales:
            runs = common.refine_all(model, images,
                                     common.refine_for(args, method, lam=scale * lam0), args)
            curves[method].append({"scale": scale, "lam": scale * lam0,
                                   **common.mean_best(runs, args.iterations)})
            print(f"{method} x{scale:g}: {curves[method][-1]}", flush=True)
    zoo.sort(key=lambda point: point["bpp"])
    common.save_json(args, NAME, {"weights": name, "reference": [z["name"] for z in zoo],
                                  "images": [n for n, _ in images],
                                  "iterations": args.iterations, "unrefined": zoo,
                                  "curves": curves})
    plot(args, zoo, curves)
    rows = [["unrefined", z["name"], "", f"{z['bpp']:.4f}", f"{z['psnr']:.3f}"] for z in zoo]
    rows += [[m, f"{c['scale']:g} x", f"{c['lam']:.5f}", f"{c['bpp']:.4f}", f"{c['psnr']:.3f}"]
             for m, points in curves.items() for c in points]
    lines = [common.describe(args, models, images) + f" Refined model: {name}.", "",
             *common.table(["curve", "scale / model", "lambda", "bpp", "PSNR"], rows)]
    if len(zoo) > 1:
        bd = [[m, *_bd(zoo, points)] for m, points in curves.items()]
        lines += ["", "Each semi-multi-rate curve against the unrefined models:", "",
                  *common.table(["method", "BD-rate", "BD-PSNR"], bd)]
    lines += ["", f"![semi-multi-rate](results/{NAME}.png)"]
    common.finish(args, NAME, "SGA+: semi-multi-rate from one model", "\n".join(lines))


def _bd(ref: list[dict], test: list[dict]) -> list[str]:
    curve = [[p["bpp"] for p in ref], [p["psnr"] for p in ref]]
    other = [[p["bpp"] for p in test], [p["psnr"] for p in test]]
    try:
        return [f"{bd_rate(*curve, *other):+.2f} %", f"{bd_psnr(*curve, *other):+.3f} dB"]
    except ValueError as e:  # no overlap
        return [str(e), ""]


def plot(args, zoo: list[dict], curves: dict) -> None:
    fig, axes = common.figure(1, 1)
    ax = axes[0, 0]
    ax.plot([z["bpp"] for z in zoo], [z["psnr"] for z in zoo], "k-o", label="unrefined models",
            markersize=4)
    for method, points in curves.items():
        ax.plot([c["bpp"] for c in points], [c["psnr"] for c in points], marker=".",
                label=f"{method}, {args.iterations} it", linewidth=1)
    ax.set_xlabel("bpp")
    ax.set_ylabel("PSNR (dB)")
    ax.legend(fontsize=7)
    common.save_figure(args, fig, NAME)


if __name__ == "__main__":
    main()
