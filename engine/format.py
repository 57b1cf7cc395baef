"""The bitstream container: a versioned header, a stream table and the coded streams.

Version 2 (written), docs/FORMAT.md has the full description:

    magic "\\x89NIC" | version u8 = 2 | model kind u8 | flags u8 | quality u16 (1/256 units) |
    weights fingerprint u32 | tables fingerprint u32 | [integer fingerprint u32] |
    height, width | stream count | stream lengths | crc32 u32 | payload (the streams, back to back)

Flag bit 0 (INTEGER): the tables were chosen by the weights' integer hyper-decoder, whose
fingerprint follows the tables fingerprint. Flag bit 1 (RECTIFIER): the weights have a quantization
rectifier, and decoders use it unless asked not to (the symbols do not depend on it). Other bits
are reserved (0).

Version 1 (still read): magic | version u8 = 1 | model kind u8 | quality u8 | flags u8 |
weights fingerprint u32 | height, width | z shape (C, H, W) | y shape (C, H, W) | stream count |
stream lengths | crc32 u32 | payload.

Integers after the fixed fields are unsigned LEB128 varints of at most 5 bytes; fixed-width
fields are little-endian. The CRC32 covers every header byte before it and the whole payload.
Every field is range-checked before anything is allocated from it, and every problem raises
`CodecError` saying what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .coder import STREAM_HEADER_BYTES
from .errors import CodecError

MAGIC = b"\x89NIC"
SUFFIX = ".nic"  # the file name extension of a stream
VERSION = 2  # what the encoder writes; version 1 streams are read too
MAX_SIDE = 1 << 16  # image height and width, in pixels
MAX_LATENT = 1 << 14  # latent channels, height and width (version 1 headers)
MAX_STREAMS = 1 << 12
MAX_QUALITY = (1 << 16) - 1  # in QUALITY_UNITS
QUALITY_UNITS = 256  # version 2 stores quality * 256 (so 3.5 is exact)
_V1 = struct.Struct("<4sBBBBI")
_V2 = struct.Struct("<4sBBBHII")
_U32 = struct.Struct("<I")
INTEGER = 0x01  # flag: coded with the integer hyper-decoder (its fingerprint follows)
RECTIFIER = 0x02  # flag: the weights decode with a quantization rectifier


@dataclass(frozen=True)
class Header:
    """What a stream's header says. `tables_fingerprint` is None and `latent_shapes` holds the
    (z, y) shapes in version 1 streams; in version 2, latent shapes follow from the model.
    `integer_fingerprint`: the integer hyper-decoder's, for streams coded with one (else None).
    `rectifier`: the weights that made it have a quantization rectifier."""

    kind_id: int
    quality: float
    fingerprint: int
    tables_fingerprint: int | None
    height: int
    width: int
    stream_lengths: tuple[int, ...]
    version: int = VERSION
    latent_shapes: tuple[tuple[int, ...], ...] = ()
    integer_fingerprint: int | None = None
    rectifier: bool = False


def quality_code(quality: float) -> int:
    """The header's integer for `quality`: ValueError unless it is on the 1/256 grid in range.
    (The codec rounds a variable-rate quality to the grid before coding with it.)"""
    code = quality * QUALITY_UNITS
    if not (0 <= code <= MAX_QUALITY and code == int(code)):
        raise ValueError(f"quality {quality} is not a multiple of 1/{QUALITY_UNITS} in "
                         f"[0, {MAX_QUALITY / QUALITY_UNITS}]")
    return int(code)


def pack(header: Header, streams: list[bytes]) -> bytes:
    """Serialise a version 2 header and its coded streams into one bytes object."""
    if [len(s) for s in streams] != list(header.stream_lengths):
        raise ValueError("stream lengths do not match the header")
    if header.version != VERSION or header.tables_fingerprint is None:
        raise ValueError(f"only version {VERSION} headers are written")
    integer = header.integer_fingerprint is not None
    flags = (INTEGER if integer else 0) | (RECTIFIER if header.rectifier else 0)
    out = bytearray(_V2.pack(MAGIC, VERSION, header.kind_id, flags,
                             quality_code(header.quality), header.fingerprint,
                             header.tables_fingerprint))
    if integer:
        out += _U32.pack(header.integer_fingerprint)
    for v in (header.height, header.width, len(streams), *header.stream_lengths):
        _put_varint(out, v)
    crc = zlib.crc32(out)
    for s in streams:
        crc = zlib.crc32(s, crc)
    out += struct.pack("<I", crc)
    for s in streams:
        out += s
    return bytes(out)


def unpack(data: bytes | bytearray | memoryview) -> tuple[Header, list[memoryview]]:
    """Parse and validate a stream of either version; returns the header and a view of each
    coded stream."""
    view = memoryview(data).cast("B")
    if not view:
        raise CodecError("empty stream (0 bytes)")
    if len(view) < 5 or bytes(view[:4]) != MAGIC:
        if len(view) < len(MAGIC) and bytes(view) == MAGIC[: len(view)]:
            raise CodecError(f"truncated: {len(view)} bytes, not even a header")
        raise CodecError("not a nicengine stream (bad magic number)")
    version = view[4]
    if version not in (1, 2):
        raise CodecError(f"unsupported format version {version} (this engine reads 1 and 2)")
    fixed = _V1 if version == 1 else _V2
    if len(view) < fixed.size:
        raise CodecError(f"truncated: {len(view)} bytes, inside the header's fixed fields")
    if version == 1:
        _, _, kind_id, quality, flags, fp = fixed.unpack_from(view)
        tables_fp = None
    else:
        _, _, kind_id, flags, quality, fp, tables_fp = fixed.unpack_from(view)
        quality /= QUALITY_UNITS
    known = INTEGER | RECTIFIER if version == 2 else 0
    if flags & ~known:
        raise CodecError(f"unknown header flags {flags & ~known:#x}")
    pos = fixed.size
    integer_fp = None
    if flags & INTEGER:
        if len(view) < pos + _U32.size:
            raise CodecError(f"truncated: {len(view)} bytes, inside the header's fixed fields")
        (integer_fp,) = _U32.unpack_from(view, pos)
        pos += _U32.size

    def field(name: str, lo: int, hi: int) -> int:
        nonlocal pos
        value, pos = _get_varint(view, pos, name)
        if not lo <= value <= hi:
            raise CodecError(f"header field {name} = {value} is outside [{lo}, {hi}]")
        return value

    height = field("height", 1, MAX_SIDE)
    width = field("width", 1, MAX_SIDE)
    shapes: tuple[tuple[int, ...], ...] = ()
    if version == 1:
        shapes = tuple(tuple(field(f"{name}_shape[{i}]", 1, MAX_LATENT) for i in range(3))
                       for name in ("z", "y"))
    count = field("stream count", 1, MAX_STREAMS)
    lengths = tuple(field(f"stream length[{i}]", STREAM_HEADER_BYTES, (1 << 32) - 1)
                    for i in range(count))
    if any(n % 2 for n in lengths):
        raise CodecError("a stream length is odd (streams hold 16-bit words)")
    if pos + 4 > len(view):
        raise CodecError(f"truncated: {len(view)} bytes, inside the header's CRC32")
    (crc,) = struct.unpack_from("<I", view, pos)
    payload = view[pos + 4 :]
    streams, start = [], 0
    for i, n in enumerate(lengths):
        if start + n > len(payload):
            raise CodecError(f"truncated: stream {i} needs {n} bytes, "
                             f"{len(payload) - start} remain")
        streams.append(payload[start : start + n])
        start += n
    if start != len(payload):
        raise CodecError(f"{len(payload) - start} bytes after the last stream (a padded or "
                         "concatenated file?)")
    if zlib.crc32(payload, zlib.crc32(view[:pos])) != crc:
        raise CodecError("CRC32 mismatch: the stream is corrupted")
    header = Header(kind_id, float(quality), fp, tables_fp, height, width, lengths, version,
                    shapes, integer_fp, bool(flags & RECTIFIER))
    return header, streams


def _put_varint(out: bytearray, value: int) -> None:
    if not 0 <= value < 1 << 32:
        raise ValueError(f"varint out of range: {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _get_varint(view: memoryview, pos: int, name: str) -> tuple[int, int]:
    value = 0
    for i in range(5):
        if pos + i >= len(view):
            raise CodecError(f"truncated: {len(view)} bytes, inside the header (reading {name})")
        byte = view[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise CodecError(f"header field {name} has an overlong encoding")
            return value, pos + i + 1
    raise CodecError(f"header field {name} is longer than 5 bytes")
