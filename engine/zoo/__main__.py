"""Command line: python -m engine.zoo import-compressai CKPT OUT.safetensors --arch ARCH.

Imports a CompressAI checkpoint into a weights file that `engine.Codec(weights=OUT)` and
`python -m engine compress --weights OUT` use. Every failure ends in one line on stderr: exit
status 2 for a usage error (argparse's), 1 for a checkpoint the importer cannot use.
"""

from __future__ import annotations

import argparse
import sys

from .compressai import ARCHS, import_compressai
from .weights import STORAGE


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
    return p


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    try:
        model = import_compressai(a.checkpoint, a.out, a.arch, quality=a.quality, lam=a.lam,
                                  storage=a.storage)
    except (ValueError, OSError) as err:  # OSError: missing, unreadable, unwritable
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    info, config = model.info, model.config
    lam = (f"lambda {info.lam:g} ({info.meta['lambda_source']})" if info.lam is not None
           else "lambda unknown (refinement needs --lam or Refine(lam=...))")
    print(f"{a.out}: {a.arch} N={config.N} M={config.M} as model kind {model.ARCH}, quality "
          f"{info.quality:g}, {lam}, fingerprint {info.fingerprint:08x}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
