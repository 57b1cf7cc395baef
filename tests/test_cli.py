"""The command line and the shipped models, on generated images."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import DEFAULT_QUALITY, compress, decompress, zoo
from engine.cli import main
from engine.images import to_uint8
from engine.metrics import psnr
from tests.conftest import smooth_image


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(to_uint8(smooth_image(96, 130))).save(path)
    return path


def test_at_least_three_shipped_qualities_with_their_metadata():
    qualities = zoo.shipped_qualities()
    assert len(qualities) >= 3 and DEFAULT_QUALITY in qualities
    lambdas = [zoo.load_quality(q).info["lambda"] for q in qualities]
    assert lambdas == sorted(lambdas)


def test_quality_orders_rate_and_distortion():
    x = smooth_image(128, 192)
    sizes, quality = [], []
    for q in zoo.shipped_qualities():
        data = compress(x, quality=q)
        sizes.append(len(data))
        quality.append(psnr(decompress(data), x))
    assert sizes == sorted(sizes) and quality == sorted(quality)


def test_compress_decompress_info(png, tmp_path, capsys):
    out, back = tmp_path / "a.nic", tmp_path / "b.png"
    assert main(["compress", str(png), str(out), "-q", str(DEFAULT_QUALITY)]) == 0
    assert main(["decompress", str(out), str(back)]) == 0
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "130x96" in text and f"quality {DEFAULT_QUALITY}" in text
    decoded = np.array(Image.open(back))
    assert decoded.shape == (96, 130, 3)
    original = torch.from_numpy(np.array(Image.open(png))).permute(2, 0, 1) / 255
    assert psnr(torch.from_numpy(decoded).permute(2, 0, 1) / 255, original) > 25


def test_precision_option(png, tmp_path):
    out = tmp_path / "a.nic"
    assert main(["compress", str(png), str(out), "--precision", "float32"]) == 0
    decoded = {p: tmp_path / f"{p}.png" for p in ("float32", "bfloat16")}
    for p, path in decoded.items():
        assert main(["decompress", str(out), str(path), "--precision", p]) == 0
    a, b = (np.asarray(Image.open(path)).astype(int) for path in decoded.values())
    assert np.abs(a - b).max() <= 3  # the same latents; bfloat16 moves pixels by a few levels
    with pytest.raises(SystemExit):
        main(["compress", str(png), str(out), "--precision", "half"])


def test_eval_writes_json(tmp_path, png):
    (tmp_path / "imgs").mkdir()
    png.rename(tmp_path / "imgs" / "a.png")
    report = tmp_path / "r.json"
    assert main(["eval", str(tmp_path / "imgs"), "-q", str(DEFAULT_QUALITY),
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())[str(DEFAULT_QUALITY)]
    assert result["images"][0]["name"] == "a.png"
    assert {"bpp", "psnr", "ms_ssim", "encode_s", "decode_s"} <= set(result["mean"])


def test_errors_are_reported_not_raised(tmp_path, capsys):
    bad = tmp_path / "bad.nic"
    bad.write_bytes(b"\x89NIC\x01garbage")
    assert main(["decompress", str(bad), str(tmp_path / "x.png")]) == 1
    assert main(["compress", str(tmp_path / "missing.png"), str(bad)]) == 1
    assert "error:" in capsys.readouterr().err
