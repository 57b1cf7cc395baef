"""Golden streams (tests/golden/): streams written by earlier releases and by every shipped model
keep decoding to the same image.

Each `.nic` has its reference decoding beside it as a PNG. The decoded symbols must match
exactly (a table or model change desynchronises them into garbage, or fails the tables
fingerprint of version 2 headers); the pixels are compared within one 8-bit level because the
float synthesis transform rounds differently across CPUs (ISA) and thread counts (measured: the
SHA-256 of the decoded pixels changed between 1 and 2 threads on one machine).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine
from engine import CodecError, format, zoo
from engine.images import to_uint8
from tests.golden.make_golden import golden_name

GOLDEN = Path(__file__).parent / "golden"
STREAMS = sorted(p.name for p in GOLDEN.glob("*.nic"))
GOLDEN_CODEC = engine.Codec(device="cpu", precision="float32")


@pytest.mark.parametrize("name", STREAMS)
def test_golden_stream_decodes_to_its_reference(name):
    data = (GOLDEN / name).read_bytes()
    reference = np.asarray(Image.open((GOLDEN / name).with_suffix(".png"))).astype(int)
    # float32: the 1-level tolerance is float32's (bfloat16, "auto" on some CPUs, moves more).
    decoded = to_uint8(GOLDEN_CODEC.decompress(data)).astype(int)
    assert decoded.shape == reference.shape
    diff = np.abs(decoded - reference)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01


def test_every_shipped_level_has_a_golden_stream_of_what_it_writes_today():
    expected = {golden_name(name, q)
                for name, levels in zoo.shipped_models().items() for q in levels}
    assert expected <= set(STREAMS), "run python tests/golden/make_golden.py and commit"


@pytest.mark.parametrize("name", STREAMS)
def test_golden_streams_say_whether_they_use_the_integer_hyper_decoder(name):
    header, _ = format.unpack((GOLDEN / name).read_bytes())
    assert (header.integer_fingerprint is not None) == name.endswith("-int.nic")


def test_version_1_streams_are_pinned():
    assert {f"v1-msh-q{q}.nic" for q in range(1, 7)} <= set(STREAMS)


def test_a_change_in_table_derivation_is_caught():
    """A stream whose tables fingerprint differs from the tables this engine derives is refused
    (as it would be after a change to how tables are built), not decoded into garbage."""
    data = bytearray((GOLDEN / f"v{format.VERSION}-msh-q3.nic").read_bytes())
    header, _ = format.unpack(bytes(data))
    at = data.index(struct.pack("<I", header.tables_fingerprint))
    data[at] ^= 1
    crc_at = len(data) - sum(header.stream_lengths) - 4
    payload = bytes(data[crc_at + 4 :])
    data[crc_at : crc_at + 4] = struct.pack("<I", zlib.crc32(payload,
                                                            zlib.crc32(bytes(data[:crc_at]))))
    with pytest.raises(CodecError, match="other CDF tables"):
        engine.decompress(bytes(data), device="cpu")
