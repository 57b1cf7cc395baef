import struct
import zlib

import pytest

from engine import CodecError
from engine.format import MAGIC, Header, _get_varint, _put_varint, pack, unpack


def make(lengths=(130, 200)) -> bytes:
    header = Header(1, 3, 0xDEADBEEF, 480, 640, (16, 8, 10), (24, 32, 40), lengths)
    return pack(header, [bytes([i]) * n for i, n in enumerate(lengths)])


def test_round_trip():
    data = make()
    header, streams = unpack(data)
    assert header == Header(1, 3, 0xDEADBEEF, 480, 640, (16, 8, 10), (24, 32, 40), (130, 200))
    assert [bytes(s) for s in streams] == [b"\x00" * 130, b"\x01" * 200]


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**21, 2**32 - 1])
def test_varint(value):
    out = bytearray()
    _put_varint(out, value)
    assert _get_varint(memoryview(bytes(out)), 0, "x") == (value, len(out))


def test_varint_rejects_overlong_and_too_long():
    with pytest.raises(CodecError, match="overlong"):
        _get_varint(memoryview(b"\x81\x00"), 0, "x")
    with pytest.raises(CodecError, match="longer than 5"):
        _get_varint(memoryview(b"\xff" * 6), 0, "x")


def reseal(body: bytes, payload: bytes) -> bytes:
    """A header with a valid CRC, so that only the field checks can reject it."""
    return body + struct.pack("<I", zlib.crc32(payload, zlib.crc32(body))) + payload


def header_bytes(*varints: int) -> bytes:
    out = bytearray(MAGIC + bytes([1, 1, 3, 0]) + struct.pack("<I", 0))
    for v in varints:
        _put_varint(out, v)
    return bytes(out)


@pytest.mark.parametrize("fields, message", [
    ((0, 64, 1, 1, 1, 1, 1, 1, 1, 128), "height"),
    ((1 << 17, 64, 1, 1, 1, 1, 1, 1, 1, 128), "height"),
    ((64, 64, 1, 1, 1, 1 << 20, 1, 1, 1, 128), "y_shape"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1 << 30), "stream count"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1, 2**31), "stream length"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1, 64), "stream length"),
])
def test_absurd_header_values_are_rejected(fields, message):
    data = reseal(header_bytes(*fields), b"\0" * 128)
    with pytest.raises(CodecError, match=message):
        unpack(data)


def test_bad_magic_version_flags_and_lengths():
    data = make()
    with pytest.raises(CodecError, match="magic"):
        unpack(b"JUNK" + data[4:])
    with pytest.raises(CodecError, match="version"):
        unpack(data[:4] + b"\x09" + data[5:])
    with pytest.raises(CodecError, match="flags"):
        unpack(data[:7] + b"\x01" + data[8:])
    with pytest.raises(CodecError, match="truncated|payload"):
        unpack(data[:-1])
    with pytest.raises(CodecError, match="payload"):
        unpack(data + b"\0")
    with pytest.raises(CodecError, match="short"):
        unpack(data[:5])


def test_every_truncation_and_single_byte_change_is_rejected():
    data = make((128, 130))
    for n in range(len(data)):
        with pytest.raises(CodecError):
            unpack(data[:n])
    for pos in range(len(data)):
        for xor in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= xor
            with pytest.raises(CodecError):
                unpack(bytes(bad))
