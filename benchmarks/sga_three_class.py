"""Three-class against two-class rounding: convergence of the true R-D loss (the analogue of
table C.5 and figure B.5 of Perugachi-Diaz et al., NeurIPS 2024, which claim three-class
rounding converges faster early on).

    python benchmarks/sga_three_class.py --weights W.safetensors [--limit N] [--crop S]
        [--iterations 2000] [--pairs linear cosine ssl] [--r 0.98] [--n 1.5] [--write]

For each pair (linear/linear3, cosine/cosine3, ssl/ssl3) the table gives the mean true loss of
the latents coded when stopping at 50, 100, 250, 500, 1000 and 2000 iterations (best so far),
and the first iteration at which each reaches 90 % of its pair's largest improvement. Uses the
first of --weights. Output: results/sga_three_class.{json,png}.
"""

from __future__ import annotations

import sga_common as common
import torch

NAME = "sga_three_class"
STOPS = (50, 100, 250, 500, 1000, 2000)


def main() -> None:
    p = common.parser(__doc__, 2000, ())
    p.add_argument("--pairs", nargs="+", default=["linear", "cosine", "ssl"],
                   choices=["linear", "cosine", "ssl"])
    p.add_argument("--r", type=float, default=0.98)
    p.add_argument("--n", type=float, default=1.5)
    args = p.parse_args()
    common.setup(args)
    name, model = common.load_models(args)[0]
    images = common.load_images(args)
    stops = common.checkpoints(args, STOPS)
    results = {}
    for base in args.pairs:
        for method in (base, base + "3"):
            runs = common.refine_all(model, images,
                                     common.refine_for(args, method, r=args.r, n=args.n), args)
            best_so_far = torch.stack([r.loss.nan_to_num(nan=float("inf")).cummin(0).values
                                       for r in runs]).mean(0)
            results[method] = {"curve": common.mean_curve(runs, "loss"),
                               "best_so_far": best_so_far.tolist(),
                               "best": {t: common.mean_best(runs, t)["loss"] for t in stops}}
            print(f"{method}: {results[method]['best']}", flush=True)
    rows = []
    for base in args.pairs:
        pair = [results[base]["best_so_far"], results[base + "3"]["best_so_far"]]
        target = pair[0][0] - 0.9 * (pair[0][0] - min(min(c) for c in pair))
        for method, curve in zip((base, base + "3"), pair, strict=True):
            reach = next((str(t) for t, v in enumerate(curve) if v <= target), "-")
            rows.append([method, *(f"{results[method]['best'][t]:.4f}" for t in stops), reach])
    common.save_json(args, NAME, {"weights": name, "images": [n for n, _ in images],
                                  "iterations": args.iterations, "r": args.r, "n": args.n,
                                  "results": results})
    plot(args, results)
    lines = [common.describe(args, [(name, model)], images) + f" Three-class r={args.r}, "
             f"n={args.n}.", "",
             "Mean true R-D loss of the latents coded when stopping after t iterations, and the "
             "first iteration reaching 90 % of the pair's largest improvement:", "",
             *common.table(["method", *(f"t={t}" for t in stops), "90 % at"], rows), "",
             f"![two- vs three-class](results/{NAME}.png)"]
    common.finish(args, NAME, "SGA+: three-class against two-class rounding", "\n".join(lines))


def plot(args, results: dict) -> None:
    fig, axes = common.figure(1, len(args.pairs))
    for ax, base in zip(axes[0], args.pairs, strict=True):
        for method, style in ((base, "-"), (base + "3", "--")):
            ax.plot(results[method]["curve"], style, label=method, linewidth=1)
        ax.set_xlabel("iteration")
        ax.set_ylabel("true R-D loss")
        ax.legend(fontsize=7)
    common.save_figure(args, fig, NAME)


if __name__ == "__main__":
    main()
