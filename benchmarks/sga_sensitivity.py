"""Sensitivity of the refinement to tau_max, the learning rate and the SSL slope a (the analogue
of tables 2, C.3 and 4 of Perugachi-Diaz et al., NeurIPS 2024, which claim SSL is less sensitive
to tau_max and lr than atanh).

    python benchmarks/sga_sensitivity.py --weights W.safetensors [--limit N] [--crop S]
        [--iterations 2000] [--tau-max ...] [--lrs ...] [--a-values ...] [--write]

tau_max sweep: every --methods method (default atanh, linear, cosine, ssl; atanh keeps its
700-step delay). lr sweep: --lr-methods (default atanh, ssl). a sweep: SSL only. Reported: the
mean true loss of the latents coded when stopping at 500 iterations and at the last (best so
far). Uses the first of --weights. Output: results/sga_sensitivity.{json,png}.
"""

from __future__ import annotations

import sga_common as common

NAME = "sga_sensitivity"


def main() -> None:
    p = common.parser(__doc__, 2000, ("atanh", "linear", "cosine", "ssl"))
    p.add_argument("--tau-max", type=float, nargs="*", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    p.add_argument("--lrs", type=float, nargs="*", default=[0.02, 0.01, 0.005])
    p.add_argument("--lr-methods", nargs="*", default=["atanh", "ssl"])
    p.add_argument("--a-values", type=float, nargs="*", default=[0.63, 1.0, 1.6, 2.3, 3.0])
    args = p.parse_args()
    common.setup(args)
    name, model = common.load_models(args)[0]
    images = common.load_images(args)
    stops = common.checkpoints(args, (500,))
    sweeps = {"tau_max": {}, "lr": {}, "a": {}}  # sweep -> "method value" -> result
    done = {}  # Refine -> runs: the sweeps share their default settings

    def run(sweep: str, method: str, value: float, **overrides) -> None:
        refine = common.refine_for(args, method, **overrides)
        if refine not in done:
            done[refine] = common.refine_all(model, images, refine, args)
        runs = done[refine]
        sweeps[sweep][f"{method} {value:g}"] = {
            "method": method, "value": value, "curve": common.mean_curve(runs, "loss"),
            "best": {t: common.mean_best(runs, t)["loss"] for t in stops}}
        print(f"{sweep} {method} {value:g}: {sweeps[sweep][f'{method} {value:g}']['best']}",
              flush=True)

    for method in args.methods:
        for tau_max in args.tau_max:
            run("tau_max", method, tau_max, tau_max=tau_max)
    for method in args.lr_methods:
        for lr in args.lrs:
            run("lr", method, lr, lr=lr)
    for a in args.a_values:
        run("a", "ssl", a, a=a)
    common.save_json(args, NAME, {"weights": name, "images": [n for n, _ in images],
                                  "iterations": args.iterations, "sweeps": sweeps})
    plot(args, sweeps)
    lines = [common.describe(args, [(name, model)], images), ""]
    for sweep, label in (("tau_max", "tau_max"), ("lr", "learning rate"), ("a", "SSL slope a")):
        if sweeps[sweep]:
            lines += [f"Mean true R-D loss by {label}, at " + " / ".join(
                f"t={t}" for t in stops) + " (lowest per value, or per row for one method, "
                "in bold):", "",
                *sweep_table(sweeps[sweep], stops), ""]
    lines.append(f"![loss curves](results/{NAME}.png)")
    common.finish(args, NAME, "SGA+: sensitivity to tau_max, learning rate and a",
                  "\n".join(lines))


def sweep_table(results: dict, stops: list[int]) -> list[str]:
    """Rows: methods; columns: values (one cell per stop, 't500 / t2000'), then the spread
    (max - min over the values) at the last stop."""
    methods = list(dict.fromkeys(r["method"] for r in results.values()))
    values = list(dict.fromkeys(r["value"] for r in results.values()))
    one = len(methods) == 1
    lowest = {t: {v: min(r["best"][t] for r in results.values() if one or r["value"] == v)
                  for v in values} for t in stops}

    def cell(method: str, v: float) -> str:
        r = results.get(f"{method} {v:g}")
        if r is None:
            return ""
        return " / ".join(f"**{r['best'][t]:.4f}**" if r["best"][t] == lowest[t][v]
                          else f"{r['best'][t]:.4f}" for t in stops)

    def spread(method: str) -> str:  # how much the choice matters, at the last stop
        losses = [r["best"][stops[-1]] for r in results.values() if r["method"] == method]
        return f"{max(losses) - min(losses):.4f}"

    return common.table(["method", *(f"{v:g}" for v in values), "spread"],
                        [[m, *(cell(m, v) for v in values), spread(m)] for m in methods])


def plot(args, sweeps: dict) -> None:
    used = [s for s in sweeps if sweeps[s]]
    fig, axes = common.figure(1, max(len(used), 1))
    for ax, sweep in zip(axes[0], used, strict=False):
        for key, r in sweeps[sweep].items():
            ax.plot(r["curve"], label=key, linewidth=1)
        ax.set_title(f"by {sweep}")
        ax.set_xlabel("iteration")
        ax.set_ylabel("true R-D loss")
        ax.legend(fontsize=6)
    common.save_figure(args, fig, NAME)


if __name__ == "__main__":
    main()
