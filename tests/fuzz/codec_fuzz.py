"""Damaged streams against the whole decoder, `engine.Codec.decompress`: every input must decode
or raise `engine.CodecError`, never another exception, and never take long.

Streams of a few generated images (several sizes, qualities and stream counts) are damaged at
random: bytes flipped with the CRC32 left as it is or forged to match (so that the damage
reaches the header checks, the coder and the networks), header fields set to random values in
a correctly re-packed stream, cuts and appended bytes. The streams are the default model's, or
another shipped model's (`--model`), or a weights file's (`--weights`), at the lowest and the
highest quality (and one in between for a variable-rate model).

usage: python tests/fuzz/codec_fuzz.py [--seconds S] [--seed K] [--model NAME | --weights FILE]
(`make fuzz` runs it on the default model)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import resource
import struct
import time
import zlib

import numpy as np
import torch

import engine
from engine import format, zoo

SLOW_S = 5.0  # a decode this slow counts as a hang


def qualities(model: str, weights: str | None) -> list[float]:
    """The lowest and the highest quality, and one in between for a variable-rate model."""
    if weights is None:
        span = zoo.quality_range(model)
        if span is None:
            levels = zoo.shipped_qualities(model)
            return [levels[0], levels[-1]]
    else:
        loaded = engine.Codec(weights=weights, device="cpu").model()
        if not loaded.VARIABLE_RATE:
            return [loaded.info.quality]
        span = loaded.quality_range()
    low, high = span
    return [low, low + 0.37 * (high - low), high]


def sample_streams(rng: np.random.Generator, model: str, weights: str | None) -> list[bytes]:
    """Streams of noisy gradients at awkward sizes, the lowest to the highest quality, one and
    several streams."""
    def codec(quality: float, **options: int) -> engine.Codec:
        return engine.Codec(quality, "cpu", weights=weights, model=model, **options)

    levels = qualities(model, weights)
    out = []
    for h, w in ((1, 1), (17, 33), (64, 64), (70, 130)):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w, 2)
        img = np.stack([yy, xx, (yy + xx) / 2]) + 0.1 * rng.standard_normal((3, h, w))
        x = torch.from_numpy(img.clip(0, 1)).float()
        for quality in levels:
            out.append(codec(quality).compress(x))
    many = codec(levels[-1], stream_bytes=256)  # several coded streams in one image
    out.append(many.compress(torch.rand(3, 96, 128)))
    return out


def forge_crc(data: bytearray, crc_at: int) -> None:
    """Sets the header's CRC32 field (at crc_at) to match the damaged bytes around it."""
    crc = zlib.crc32(bytes(data[crc_at + 4 :]), zlib.crc32(bytes(data[:crc_at])))
    data[crc_at : crc_at + 4] = struct.pack("<I", crc)


def damage(stream: bytes, rng: np.random.Generator) -> bytes:
    header, views = format.unpack(stream)
    crc_at = len(stream) - sum(header.stream_lengths) - 4
    kind = rng.integers(4)
    data = bytearray(stream)
    if kind == 0:  # flipped bytes, CRC forged (mostly in the payload) or not
        forge = rng.random() < 0.8
        lo = crc_at + 4 if forge and rng.random() < 0.8 else 0
        for _ in range(rng.integers(1, 5)):
            data[rng.integers(lo, len(data))] ^= int(rng.integers(1, 256))
        if forge:
            forge_crc(data, crc_at)
        return bytes(data)
    if kind == 1:  # a header field set to a random value, re-packed with a valid CRC
        name = rng.choice([f.name for f in dataclasses.fields(header) if f.name != "version"])
        value = getattr(header, name)
        big = int(rng.choice([1, 2, 64, 1 << 14, 1 << 16, 1 << 20, 1 << 31]))
        if isinstance(value, tuple):
            value = tuple(int(rng.integers(0, big + 1)) if rng.random() < 0.5 else v
                          for v in value)
        elif isinstance(value, float):  # quality, on the header's grid
            value = int(rng.integers(0, big + 1)) / format.QUALITY_UNITS
        else:
            value = int(rng.integers(0, big + 1))
        header = dataclasses.replace(header, **{name: value})
        try:
            return format.pack(header, [bytes(v) for v in views])
        except (ValueError, OverflowError, struct.error):  # pack refuses the field itself
            return stream
    if kind == 2:  # cut short, CRC forged or not
        data = data[: rng.integers(0, len(data))]
        if crc_at + 4 <= len(data) and rng.random() < 0.5:
            forge_crc(data, crc_at)
        return bytes(data)
    extra = rng.integers(0, 256, rng.integers(1, 300), dtype=np.uint8).tobytes()
    data += extra  # appended bytes, CRC forged or not
    if rng.random() < 0.5:
        forge_crc(data, crc_at)
    return bytes(data)


def save_failure(data: bytes) -> str:
    path = "codec_fuzz_failure.nic"
    with open(path, "wb") as f:
        f.write(data)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model", default=zoo.DEFAULT_MODEL, help="a shipped model's streams")
    parser.add_argument("--weights", default=None, help="a weights file's streams")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(1)
    codec = engine.Codec(device="cpu", weights=args.weights)
    streams = sample_streams(rng, args.model, args.weights)
    outcomes: collections.Counter[str] = collections.Counter()
    slowest, begin = 0.0, time.perf_counter()
    while time.perf_counter() - begin < args.seconds:
        data = damage(streams[rng.integers(len(streams))], rng)
        t = time.perf_counter()
        try:
            image = codec.decompress(data)
        except engine.CodecError as e:
            # Grouped by the message's start, numbers (and sizes like 64x64) left out.
            outcomes[re.sub(r"[\da-f]*\d[\dxa-f]*", "N", str(e))[:50]] += 1
            image = None
        except Exception:
            print(f"codec_fuzz: not a CodecError; the input is in {save_failure(data)}")
            raise
        took = time.perf_counter() - t
        slowest = max(slowest, took)
        if took > SLOW_S:
            raise SystemExit(f"codec_fuzz: a decode took {took:.1f} s ({save_failure(data)})")
        if image is not None:
            outcomes["decoded"] += 1
            if not (image.isfinite().all() and image.min() >= 0 and image.max() <= 1):
                raise SystemExit(f"codec_fuzz: pixels outside [0, 1] ({save_failure(data)})")
    total = sum(outcomes.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"codec_fuzz: {total} damaged streams of {args.weights or args.model} in "
          f"{time.perf_counter() - begin:.0f} s, seed {args.seed}: no failure; slowest decode "
          f"{1e3 * slowest:.0f} ms, peak RSS {rss:.0f} MiB")
    for what, n in outcomes.most_common():
        print(f"  {n:7d}  {what}")


if __name__ == "__main__":
    main()
