"""Command line of weights files:

    python -m engine.zoo import-compressai CKPT OUT.safetensors --arch ARCH
    python -m engine.zoo export-onnx OUT_DIR [--model NAME --quality Q | --weights FILE]

import-compressai imports a CompressAI checkpoint into a weights file that
`engine.Codec(weights=OUT)` and `python -m engine compress --weights OUT` use. export-onnx writes
a model's networks as ONNX files with its tables and model.json (engine/onnx_export.py). Every
failure ends in one line on stderr: exit status 2 for a usage error (argparse's), 1 for input
the command cannot use (a checkpoint, a model, a folder it cannot write).
"""

from __future__ import annotations

import argparse
import sys

from ..models import CodingModel
from . import DEFAULT_MODEL, DEFAULT_QUALITY, load
from .compressai import ARCHS, import_compressai
from .weights import STORAGE, load_weights


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine.zoo", description="Weights files.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("import-compressai", help="import a CompressAI checkpoint (.pth.tar)")
    c.add_argument("checkpoint", help="CompressAI state_dict, bare or under 'state_dict'")
    c.add_argument("out", help="the weights file to write (.safetensors)")
    c.add_argument("--arch", required=True, choices=list(ARCHS))
    c.add_argument("--quality", type=float, help="the quality level streams record (default 0)")
    c.add_argument("--lam", type=float, help="the training lambda (for refinement); default: "
                   "CompressAI's zoo lambda (MSE) of --quality 1..8")
    c.add_argument("--storage", choices=STORAGE, default="float32",
                   help="of the tensors (float32: exact)")
    e = sub.add_parser("export-onnx", help="a model's networks as ONNX files, with its tables")
    e.add_argument("out_dir", help="the folder to write (created if absent)")
    e.add_argument("--model", default=DEFAULT_MODEL, help=f"a shipped model (default "
                   f"{DEFAULT_MODEL})")
    e.add_argument("--quality", type=float, help=f"its quality (default {DEFAULT_QUALITY}; with "
                   f"--weights, the weights' own unless the model is variable-rate)")
    e.add_argument("--weights", help="a weights file (.safetensors) instead of --model")
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        if a.command == "export-onnx":
            return _export_onnx(a)
        model = import_compressai(a.checkpoint, a.out, a.arch, quality=a.quality, lam=a.lam,
                                  storage=a.storage)
    except (ValueError, OSError) as err:  # OSError: missing, unreadable, unwritable
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except ImportError as err:  # the exporter's optional packages
        print(f"error: {err.msg}; export-onnx needs pip install 'nicengine[onnx]'",
              file=sys.stderr)
        return 1
    info, config = model.info, model.config
    lam = (f"lambda {info.lam:g} ({info.meta['lambda_source']})" if info.lam is not None
           else "lambda unknown (refinement needs --lam or Refine(lam=...))")
    print(f"{a.out}: {a.arch} N={config.N} M={config.M} as model kind {model.ARCH}, quality "
          f"{info.quality:g}, {lam}, fingerprint {info.fingerprint:08x}")
    return 0


def _export_onnx(a: argparse.Namespace) -> int:
    from ..onnx_export import export_onnx  # imports torch's exporter: only for this command

    model, quality = _model_to_export(a)
    doc = export_onnx(model, quality, a.out_dir)
    source = a.weights or a.model
    print(f"{a.out_dir}: {source} quality {quality:g} ({model.ARCH}, fingerprint "
          f"{doc['model']['fingerprint']}): {', '.join(doc['networks'])} as ONNX, "
          f"{doc['tables']['file']}, model.json")
    return 0


def _model_to_export(a: argparse.Namespace) -> tuple[CodingModel, float]:
    if a.weights is None:
        quality = DEFAULT_QUALITY if a.quality is None else a.quality
        return load(a.model, quality), quality
    model = load_weights(a.weights)
    if model.VARIABLE_RATE:
        if a.quality is None:
            low, high = model.quality_range()
            raise ValueError(f"{a.weights} is a variable-rate model: give --quality in "
                             f"[{low:g}, {high:g}]")
        return model, a.quality
    if a.quality is not None and a.quality != model.info.quality:
        raise ValueError(f"{a.weights} is quality {model.info.quality:g}, not {a.quality:g}")
    return model, model.info.quality


if __name__ == "__main__":
    sys.exit(main())
