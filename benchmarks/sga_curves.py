"""True R-D loss against iteration for every refinement method (the analogue of figure 2 of
Perugachi-Diaz et al., NeurIPS 2024).

    python benchmarks/sga_curves.py --weights W.safetensors [--limit N] [--crop S]
        [--iterations 2000] [--methods ...] [--write]

For each method, every image is refined from the same unrefined latents; the plot shows the mean
over images of (a) the true loss, (b) the method's loss minus the true loss, (c) PSNR and (d)
bpp, per iteration. The table gives the mean loss of the latents that would be coded when
stopping at each checkpoint (the best true loss so far) and the seconds per iteration. Uses the
first of --weights. Output: results/sga_curves.{json,png}.
"""

from __future__ import annotations

import sga_common as common

from engine.refine import METHODS

NAME = "sga_curves"
CHECKPOINTS = (0, 100, 500, 1000, 2000)


def main() -> None:
    args = common.parser(__doc__, 2000, METHODS).parse_args()
    common.setup(args)
    name, model = common.load_models(args)[0]
    images = common.load_images(args)
    curves, stops = {}, common.checkpoints(args, CHECKPOINTS)
    for method in args.methods:
        runs = common.refine_all(model, images, common.refine_for(args, method), args)
        curves[method] = {
            "loss": common.mean_curve(runs, "loss"), "bpp": common.mean_curve(runs, "bpp"),
            "psnr": common.mean_curve(runs, "psnr"),
            "gap": [r - t for r, t in zip(common.mean_curve(runs, "relaxed"),
                                          common.mean_curve(runs, "loss"), strict=False)],
            "best": {t: common.mean_best(runs, t) for t in stops},
            "s_per_it": sum(r.seconds for r in runs) / len(runs) / max(args.iterations, 1)}
        print(f"{method}: loss {curves[method]['loss'][0]:.4f} -> "
              f"{curves[method]['best'][stops[-1]]['loss']:.4f}", flush=True)
    common.save_json(args, NAME, {"weights": name, "images": [n for n, _ in images],
                                  "iterations": args.iterations, "curves": curves})
    plot(args, curves)
    rows = [[m, *(f"{c['best'][t]['loss']:.4f}" for t in stops),
             f"{c['best'][stops[-1]]['bpp']:.4f}", f"{c['best'][stops[-1]]['psnr']:.2f}",
             f"{c['s_per_it']:.3f}"] for m, c in curves.items()]
    lines = [common.describe(args, [(name, model)], images), "",
             "Mean true R-D loss of the latents coded when stopping after t iterations (the best "
             "so far; t = 0: unrefined), and bpp / PSNR at the last checkpoint:", "",
             *common.table(["method", *(f"t={t}" for t in stops), "bpp", "PSNR", "s/it"], rows),
             "", f"![true loss per iteration](results/{NAME}.png)"]
    common.finish(args, NAME, "SGA+: true R-D loss per iteration", "\n".join(lines))


def plot(args, curves: dict) -> None:
    fig, axes = common.figure(2, 2)
    panels = [("loss", "true R-D loss"), ("gap", "method loss - true loss"), ("psnr", "PSNR (dB)"),
              ("bpp", "bpp")]
    for ax, (key, label) in zip(axes.flat, panels, strict=True):
        for method, c in curves.items():
            ax.plot(c[key], label=method, linestyle="--" if method.endswith("3") else "-",
                    linewidth=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
    axes[0, 0].legend(fontsize=7)
    common.save_figure(args, fig, NAME)


if __name__ == "__main__":
    main()
