import struct
import zlib

import pytest

from engine import CodecError
from engine.format import (
    INTEGER,
    MAGIC,
    RECTIFIER,
    Header,
    _get_varint,
    _put_varint,
    pack,
    unpack,
)


def make(lengths=(130, 200), quality=3.5) -> bytes:
    header = Header(1, quality, 0xDEADBEEF, 0x01234567, 480, 640, lengths)
    return pack(header, [bytes([i]) * n for i, n in enumerate(lengths)])


def test_round_trip():
    data = make()
    header, streams = unpack(data)
    assert header == Header(1, 3.5, 0xDEADBEEF, 0x01234567, 480, 640, (130, 200))
    assert [bytes(s) for s in streams] == [b"\x00" * 130, b"\x01" * 200]


def test_integer_flag_carries_the_integer_fingerprint():
    header = Header(1, 2, 1, 2, 64, 64, (130,), integer_fingerprint=0xCAFEF00D)
    data = pack(header, [b"\0" * 130])
    assert data[6] == INTEGER
    assert unpack(data)[0] == header
    plain = pack(Header(1, 2, 1, 2, 64, 64, (130,)), [b"\0" * 130])
    assert plain[6] == 0 and len(data) == len(plain) + 4
    with pytest.raises(CodecError, match="truncated"):
        unpack(data[:20])


def test_rectifier_flag_is_one_bit():
    for integer in (None, 0xCAFEF00D):
        header = Header(1, 2, 1, 2, 64, 64, (130,), integer_fingerprint=integer, rectifier=True)
        data = pack(header, [b"\0" * 130])
        assert data[6] == RECTIFIER | (INTEGER if integer else 0)
        assert unpack(data)[0] == header
        assert len(data) == len(pack(Header(1, 2, 1, 2, 64, 64, (130,),
                                            integer_fingerprint=integer), [b"\0" * 130]))


def test_quality_is_stored_in_1_256_units():
    assert unpack(make(quality=255 + 255 / 256))[0].quality == 255 + 255 / 256
    for bad in (3.3, -1, 256):
        with pytest.raises(ValueError, match="1/256"):
            make(quality=bad)


def test_version_1_streams_are_read():
    """Version 1: quality u8, no tables fingerprint, the latent shapes in the header."""
    body = bytearray(MAGIC + bytes([1, 1, 4, 0]) + struct.pack("<I", 0xCAFEF00D))
    for v in (48, 80, 16, 1, 2, 24, 3, 5, 1, 128):
        _put_varint(body, v)
    header, streams = unpack(reseal(bytes(body), b"\7" * 128))
    assert header == Header(1, 4.0, 0xCAFEF00D, None, 48, 80, (128,), 1,
                            ((16, 1, 2), (24, 3, 5)))
    assert bytes(streams[0]) == b"\7" * 128


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
    """A version 1 header with these varints, written without the encoder's range check."""
    out = bytearray(MAGIC + bytes([1, 1, 3, 0]) + struct.pack("<I", 0))
    for v in varints:
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


@pytest.mark.parametrize("fields, message", [
    ((0, 64, 1, 1, 1, 1, 1, 1, 1, 128), "height"),
    ((1 << 17, 64, 1, 1, 1, 1, 1, 1, 1, 128), "height"),
    ((64, 64, 1, 1, 1, 1 << 20, 1, 1, 1, 128), "y_shape"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1 << 30), "stream count"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1, 2**31), "stream 0 needs 2147483648 bytes, 128 remain"),
    ((64, 64, 1, 1, 1, 1, 1, 1, 1, 2**33), "stream length"),
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
    with pytest.raises(CodecError, match="unknown header flags 0x4"):
        unpack(data[:6] + b"\x04" + data[7:])
    with pytest.raises(CodecError, match="truncated: stream 1 needs 200 bytes, 199 remain"):
        unpack(data[:-1])
    with pytest.raises(CodecError, match="1 bytes after the last stream"):
        unpack(data + b"\0")
    with pytest.raises(CodecError, match="truncated: 5 bytes"):
        unpack(data[:5])
    with pytest.raises(CodecError, match="truncated: 2 bytes, not even a header"):
        unpack(data[:2])


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
