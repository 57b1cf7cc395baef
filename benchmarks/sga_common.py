"""Shared by the SGA+ experiment scripts (benchmarks/sga_*.py): arguments, weights, images,
batched refinement runs, JSON and plots under benchmarks/results/, and one marker-delimited
section per script in benchmarks/RESULTS.md (replaced on rerun, written only with --write).

Every script states exactly what it ran (weights, images, crop, iterations, device, threads) at
the top of its section; `--smoke` labels a run as a smoke test whose numbers are not results.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from results_md import commit, machine, write_section  # noqa: E402

from engine import zoo  # noqa: E402
from engine.images import list_images, to_batch  # noqa: E402
from engine.refine import METHODS, Refine, refine_latents  # noqa: E402

KODAK = ROOT.parent / "shared" / "data" / "kodak"


def parser(doc: str, iterations: int, methods: tuple[str, ...]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--weights", nargs="+", default=None,
                   help="weights files or shipped quality numbers (default: every shipped one)")
    p.add_argument("--images", type=Path, default=KODAK)
    p.add_argument("--limit", type=int, default=None, help="use the first N images")
    p.add_argument("--crop", type=int, default=None, help="centre crop to SxS pixels")
    p.add_argument("--iterations", type=int, default=iterations)
    p.add_argument("--methods", nargs="+", default=list(methods), choices=METHODS)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--batch", type=int, default=0,
                   help="images of equal size refined together (0: 8 on CUDA, 1 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for the JSON results and plots")
    p.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    p.add_argument("--smoke", action="store_true",
                   help="label the output a smoke run (its numbers are not results)")
    return p


def setup(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.batch:
        args.batch = 8 if torch.device(args.device).type == "cuda" else 1
    args.out.mkdir(parents=True, exist_ok=True)


def load_models(args: argparse.Namespace) -> list[tuple[str, torch.nn.Module]]:
    """(name, model on args.device), in the order given."""
    specs = args.weights or [str(q) for q in zoo.shipped_qualities()]
    if not specs:
        raise SystemExit("no shipped weights: give --weights FILE ...")
    models = []
    for spec in specs:
        model = zoo.load("msh", int(spec)) if spec.isdigit() else zoo.load_weights(spec)
        name = f"q{spec}" if spec.isdigit() else Path(spec).stem
        model = model.to(args.device)
        models.append((name, model))
    return models


def load_images(args: argparse.Namespace) -> list[tuple[str, torch.Tensor]]:
    """(name, (3, H, W) in [0, 1]), centre-cropped to --crop."""
    images = []
    for path in list_images(args.images)[: args.limit]:
        x = to_batch(path)[0]
        if args.crop:
            h, w = x.shape[1:]
            top, left = max(0, (h - args.crop) // 2), max(0, (w - args.crop) // 2)
            x = x[:, top : top + args.crop, left : left + args.crop]
        images.append((path.name, x))
    return images


@dataclass
class Run:
    """One image's refinement: (T,) curves, T = steps + 1 (row 0 unrefined)."""

    loss: torch.Tensor
    bpp: torch.Tensor
    psnr: torch.Tensor
    relaxed: torch.Tensor  # (T - 1,)
    seconds: float  # the whole refinement, shared by a batch

    def best(self, t: int) -> dict[str, float]:
        """What a refinement stopped after t steps codes: the lowest true loss in rows 0..t."""
        i = int(self.loss[: t + 1].nan_to_num(nan=float("inf")).argmin())
        return {"loss": float(self.loss[i]), "bpp": float(self.bpp[i]),
                "psnr": float(self.psnr[i])}


def refine_all(model: torch.nn.Module, images: list[tuple[str, torch.Tensor]], refine: Refine,
               args: argparse.Namespace) -> list[Run]:
    """Refine every image (batches of equal-size images); one Run per image, in order."""
    runs: list[Run | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (_, x) in enumerate(images):
        by_size.setdefault(tuple(x.shape[1:]), []).append(i)
    for idx in by_size.values():
        for s in range(0, len(idx), args.batch):
            part = idx[s : s + args.batch]
            x = torch.stack([images[i][1] for i in part]).to(args.device)
            _, h = refine_latents(model, x, refine)
            for j, i in enumerate(part):
                runs[i] = Run(h.loss[:, j], h.bpp[:, j], h.psnr[:, j], h.relaxed[:, j],
                              float(h.seconds[-1]))
    return runs


def mean_curve(runs: list[Run], field: str) -> list[float]:
    return torch.stack([getattr(r, field) for r in runs]).mean(0).tolist()


def mean_best(runs: list[Run], t: int) -> dict[str, float]:
    """Mean over images of `Run.best(t)`."""
    rows = [r.best(t) for r in runs]
    return {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}


def checkpoints(args: argparse.Namespace, wanted: tuple[int, ...]) -> list[int]:
    """The wanted iteration counts that this run reaches, and always its last."""
    return sorted({t for t in wanted if t < args.iterations} | {args.iterations})


def describe(args: argparse.Namespace, models, images) -> str:
    """What was run, exactly: for the top of a results section."""
    device = machine(args.device)
    sizes = sorted({f"{x.shape[2]}x{x.shape[1]}" for _, x in images})
    weights = ", ".join(f"{name} (lambda {m.info.get('lambda', '?')}, "
                        f"{m.info.get('total_steps', m.info.get('steps', '?'))} steps, "
                        f"N={m.config.N}, M={m.config.M})" for name, m in models)
    command = "python " + " ".join(sys.argv)
    smoke = "**SMOKE RUN: these numbers are not results.** " if args.smoke else ""
    return (f"{smoke}Date {date.today()}, commit {commit()}, {device}. Weights: {weights}. "
            f"Images: {len(images)} from `{args.images.name}` ({', '.join(sizes)}"
            f"{', centre crops' if args.crop else ''}). {args.iterations} iterations, "
            f"batch {args.batch}, seed {args.seed}. Command: `{command}`.")


def save_json(args: argparse.Namespace, name: str, data: dict) -> Path:
    path = args.out / f"{name}.json"
    path.write_text(json.dumps({"smoke": args.smoke, **data}, indent=1))
    return path


def figure(rows: int, cols: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)


def save_figure(args: argparse.Namespace, fig, name: str) -> Path:
    path = args.out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def finish(args: argparse.Namespace, name: str, title: str, text: str) -> None:
    print(text)
    if args.write:
        write_section(name, title, text)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def refine_for(args: argparse.Namespace, method: str, **overrides) -> Refine:
    """The run's settings (iterations, seed, no progress bar) for `method`, with overrides."""
    settings = {"iterations": args.iterations, "seed": args.seed, "progress": False}
    return Refine(method=method, **{**settings, **overrides})
