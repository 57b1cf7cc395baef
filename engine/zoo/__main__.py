"""Command line of weights files:

    python -m engine.zoo import-compressai CKPT OUT.safetensors --arch ARCH
    python -m engine.zoo fetch NAME --quality Q [--url URL --sha256 PREFIX]
    python -m engine.zoo export-onnx OUT_DIR [--model NAME --quality Q | --weights FILE]

import-compressai imports a CompressAI checkpoint into a weights file that
`engine.Codec(weights=OUT)` and `python -m engine compress --weights OUT` use. fetch puts
CompressAI's published model into the cache (engine/zoo/published.py), where `model=NAME` and
`--model NAME` find it. export-onnx writes a model's networks as ONNX files with its tables and
model.json (engine/onnx_export.py). Every failure ends in one line on stderr: exit status 2 for a
usage error (argparse's), 1 for input the command cannot use (a checkpoint, a model that cannot
be fetched, a folder it cannot write).
"""

from __future__ import annotations

import argparse
import sys

from ..models import CodingModel
from . import DEFAULT_MODEL, DEFAULT_QUALITY, load
from .compressai import ARCHS, import_compressai
from .published import SHA256_PREFIX, cached_path, fetch, zoo_models
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
    c.set_defaults(run=_import)

    f = sub.add_parser("fetch", help="download, check and import CompressAI's published model "
                       "into the cache (once; then model=NAME finds it)")
    f.add_argument("name", choices=sorted(zoo_models()))
    f.add_argument("-q", "--quality", type=int, required=True)
    f.add_argument("--url", help="fetch this checkpoint file instead (needs --sha256); it "
                   "replaces a cached copy")
    f.add_argument("--sha256", type=_hex, help="its SHA-256, or a prefix of 8 or more hex digits")
    f.set_defaults(run=_fetch)

    e = sub.add_parser("export-onnx", help="a model's networks as ONNX files, with its tables")
    e.add_argument("out_dir", help="the folder to write (created if absent)")
    e.add_argument("--model", default=DEFAULT_MODEL, help=f"a shipped or zoo model (default "
                   f"{DEFAULT_MODEL})")
    e.add_argument("--quality", type=float, help=f"its quality (default {DEFAULT_QUALITY}; with "
                   f"--weights, the weights' own unless the model is variable-rate)")
    e.add_argument("--weights", help="a weights file (.safetensors) instead of --model")
    e.set_defaults(run=_export_onnx)
    return p


def _hex(text: str) -> str:
    if not SHA256_PREFIX.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not 8 to 64 hex digits: {text!r}")
    return text


def _import(a: argparse.Namespace) -> None:
    model = import_compressai(a.checkpoint, a.out, a.arch, quality=a.quality, lam=a.lam,
                              storage=a.storage)
    info, config = model.info, model.config
    lam = (f"lambda {info.lam:g} ({info.meta['lambda_source']})" if info.lam is not None
           else "lambda unknown (refinement needs --lam or Refine(lam=...))")
    print(f"{a.out}: {a.arch} N={config.N} M={config.M} as model kind {model.ARCH}, quality "
          f"{info.quality:g}, {lam}, fingerprint {info.fingerprint:08x}")


def _fetch(a: argparse.Namespace) -> None:
    if a.url is not None:
        model, how = fetch(a.name, a.quality, a.url, a.sha256), f"fetched from {a.url}"
    else:
        was_cached = cached_path(a.name, a.quality).is_file()
        model, how = load(a.name, a.quality), "cached before" if was_cached else "fetched"
    info, config = model.info, model.config
    print(f"{info.path}: {a.name} N={config.N} M={config.M}, quality {info.quality:g}, "
          f"fingerprint {info.fingerprint:08x} ({how})")


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    if a.command == "fetch":
        if (a.url is None) != (a.sha256 is None):
            p.error("--url and --sha256 go together")
        if a.quality not in zoo_models()[a.name]:
            p.error(f"{a.name} has quality levels {list(zoo_models()[a.name])}, not {a.quality}")
    try:
        a.run(a)
    except (ValueError, OSError) as err:  # OSError: missing, unreadable, unwritable, FetchError
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    except ImportError as err:  # the exporter's optional packages
        print(f"error: {err.msg}; export-onnx needs pip install 'nicengine[onnx]'",
              file=sys.stderr)
        return 1
    return 0


def _export_onnx(a: argparse.Namespace) -> None:
    from ..onnx_export import export_onnx  # imports torch's exporter: only for this command

    model, quality = _model_to_export(a)
    doc = export_onnx(model, quality, a.out_dir)
    source = a.weights or a.model
    print(f"{a.out_dir}: {source} quality {quality:g} ({model.ARCH}, fingerprint "
          f"{doc['model']['fingerprint']}): {', '.join(doc['networks'])} as ONNX, "
          f"{doc['tables']['file']}, model.json")


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
