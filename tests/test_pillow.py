"""The format in Pillow (engine.pillow), through Pillow's own API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import engine.pillow
from engine import CodecError, compress, decompress, format
from engine.images import to_batch, to_uint8
from engine.metrics import psnr
from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return Image.fromarray(to_uint8(smooth_image(72, 104)))


def test_save_and_open(photo, tmp_path):
    path = tmp_path / "x.nic"
    photo.save(path, quality=2)
    data = path.read_bytes()
    assert data.startswith(format.MAGIC) and format.unpack(data)[0].quality == 2
    with Image.open(path) as im:
        assert (im.format, im.size, im.mode) == ("NIC", (104, 72), "RGB")
        im.load()
        assert np.array_equal(np.asarray(im), to_uint8(decompress(data)))
    assert psnr(to_batch(Image.open(path)), to_batch(photo)) > 28


def test_quality_option_and_its_default(photo, tmp_path):
    photo.save(tmp_path / "default.nic")
    assert (tmp_path / "default.nic").read_bytes() == compress(photo)
    photo.save(tmp_path / "q1.nic", quality=1)
    photo.save(tmp_path / "q5.nic", quality=5)
    assert (tmp_path / "q1.nic").stat().st_size < (tmp_path / "q5.nic").stat().st_size


def test_size_comes_from_the_header_without_decoding(photo, tmp_path, monkeypatch):
    photo.save(tmp_path / "x.nic")

    def no_decoding(data):
        raise AssertionError("opening decoded the image")

    monkeypatch.setattr(engine.pillow, "decompress", no_decoding)
    with Image.open(tmp_path / "x.nic") as im:
        assert im.size == (104, 72)
        with pytest.raises(AssertionError, match="decoded"):
            im.load()


def test_the_magic_number_identifies_the_file(photo, tmp_path):
    photo.save(tmp_path / "x.bin", format="NIC")
    with Image.open(tmp_path / "x.bin") as im:
        assert im.format == "NIC"
    photo.save(tmp_path / "y.png")  # other formats are still theirs
    with Image.open(tmp_path / "y.png") as im:
        assert im.format == "PNG"


def test_gray_and_alpha_images(tmp_path):
    Image.new("L", (20, 12), 90).save(tmp_path / "gray.nic")
    with Image.open(tmp_path / "gray.nic") as im:
        assert im.mode == "RGB" and im.size == (20, 12)
    rgba = Image.new("RGBA", (20, 12), (10, 200, 30, 128))
    with pytest.raises(ValueError, match="alpha"):
        rgba.save(tmp_path / "alpha.nic")
    rgba.save(tmp_path / "alpha.nic", drop_alpha=True)
    assert Image.open(tmp_path / "alpha.nic").size == (20, 12)


def test_damaged_files_raise_codec_errors(photo, tmp_path):
    data = compress(photo)
    (tmp_path / "flipped.nic").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CodecError, match="CRC32"):
        Image.open(tmp_path / "flipped.nic")
    (tmp_path / "cut.nic").write_bytes(data[:10])
    with pytest.raises(CodecError):
        Image.open(tmp_path / "cut.nic")


def test_registration_in_a_fresh_interpreter(photo, tmp_path):
    path = tmp_path / "x.nic"
    photo.save(path)
    code = f"""
from PIL import Image, UnidentifiedImageError
try:
    Image.open({str(path)!r})
    raise SystemExit("opened before engine.pillow was imported")
except UnidentifiedImageError:
    pass
import engine.pillow
im = Image.open({str(path)!r})
im.load()
print(im.format, im.size, im.mode)
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["NIC", "(104,", "72)", "RGB"]
