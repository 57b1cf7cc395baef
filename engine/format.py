"""The bitstream container: a versioned header, a stream table and the coded streams.

Layout (docs/FORMAT.md has the full description):

    magic "\\x89NIC" | version u8 | model id u8 | quality u8 | flags u8 | fingerprint u32 |
    height, width | z shape (C, H, W) | y shape (C, H, W) | stream count | stream lengths |
    crc32 u32 | payload (the streams, back to back)

Integers after `fingerprint` are unsigned LEB128 varints of at most 5 bytes; fixed-width fields
are little-endian. The CRC32 covers every header byte before it and the whole payload. Every
field is range-checked before anything is allocated from it, and every problem raises
`CodecError` saying what is wrong.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import CodecError

MAGIC = b"\x89NIC"
VERSION = 1
MAX_SIDE = 1 << 16  # image height and width, in pixels
MAX_LATENT = 1 << 14  # latent channels, height and width
MAX_STREAMS = 1 << 12
STREAM_HEADER_BYTES = 128  # the 32 lane states that open every coded stream
_FIXED = struct.Struct("<4sBBBBI")


@dataclass(frozen=True)
class Header:
    model_id: int
    quality: int
    fingerprint: int
    height: int
    width: int
    z_shape: tuple[int, int, int]
    y_shape: tuple[int, int, int]
    stream_lengths: tuple[int, ...]


def pack(header: Header, streams: list[bytes]) -> bytes:
    """Serialise a header and its coded streams into one bytes object."""
    if [len(s) for s in streams] != list(header.stream_lengths):
        raise ValueError("stream lengths do not match the header")
    out = bytearray(_FIXED.pack(MAGIC, VERSION, header.model_id, header.quality, 0,
                                header.fingerprint))
    for v in (header.height, header.width, *header.z_shape, *header.y_shape,
              len(streams), *header.stream_lengths):
        _put_varint(out, v)
    crc = zlib.crc32(out)
    for s in streams:
        crc = zlib.crc32(s, crc)
    out += struct.pack("<I", crc)
    for s in streams:
        out += s
    return bytes(out)


def unpack(data: bytes | bytearray | memoryview) -> tuple[Header, list[memoryview]]:
    """Parse and validate a stream; returns the header and a view of each coded stream."""
    view = memoryview(data).cast("B")
    if len(view) < _FIXED.size:
        raise CodecError(f"stream too short for a header ({len(view)} bytes)")
    magic, version, model_id, quality, flags, fingerprint = _FIXED.unpack_from(view)
    if magic != MAGIC:
        raise CodecError("not a nicengine stream (bad magic number)")
    if version != VERSION:
        raise CodecError(f"unsupported format version {version} (this engine reads {VERSION})")
    if flags != 0:
        raise CodecError(f"unknown header flags {flags:#x}")
    pos = _FIXED.size

    def field(name: str, lo: int, hi: int) -> int:
        nonlocal pos
        value, pos = _get_varint(view, pos, name)
        if not lo <= value <= hi:
            raise CodecError(f"header field {name} = {value} is outside [{lo}, {hi}]")
        return value

    height = field("height", 1, MAX_SIDE)
    width = field("width", 1, MAX_SIDE)
    z_shape = tuple(field(f"z_shape[{i}]", 1, MAX_LATENT) for i in range(3))
    y_shape = tuple(field(f"y_shape[{i}]", 1, MAX_LATENT) for i in range(3))
    count = field("stream count", 1, MAX_STREAMS)
    remaining = len(view) - pos
    lengths = tuple(field(f"stream length[{i}]", STREAM_HEADER_BYTES, remaining)
                    for i in range(count))
    if any(n % 2 for n in lengths):
        raise CodecError("a stream length is odd (streams hold 16-bit words)")
    if pos + 4 > len(view):
        raise CodecError("stream truncated inside the header")
    (crc,) = struct.unpack_from("<I", view, pos)
    payload = view[pos + 4 :]
    if sum(lengths) != len(payload):
        raise CodecError(f"payload holds {len(payload)} bytes but the stream table says "
                         f"{sum(lengths)} (truncated or padded stream)")
    if zlib.crc32(payload, zlib.crc32(view[:pos])) != crc:
        raise CodecError("CRC32 mismatch: the stream is corrupted")
    streams, start = [], 0
    for n in lengths:
        streams.append(payload[start : start + n])
        start += n
    header = Header(model_id, quality, fingerprint, height, width, z_shape, y_shape, lengths)
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
            raise CodecError(f"stream truncated inside the header (reading {name})")
        byte = view[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i and byte == 0:
                raise CodecError(f"header field {name} has an overlong encoding")
            return value, pos + i + 1
    raise CodecError(f"header field {name} is longer than 5 bytes")
