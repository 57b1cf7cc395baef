"""The command line and the shipped models, on generated images."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import DEFAULT_QUALITY, compress, decompress, zoo
from engine.cli import main
from engine.images import to_uint8
from engine.metrics import psnr
from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(to_uint8(smooth_image(96, 130))).save(path)
    return path


def test_at_least_three_shipped_qualities_with_their_metadata():
    qualities = zoo.shipped_qualities()
    assert len(qualities) >= 3 and DEFAULT_QUALITY in qualities
    lambdas = [zoo.load("msh", q).info.lam for q in qualities]
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
    assert "130x96" in text and f"model        msh, quality {DEFAULT_QUALITY}, weights " in text
    decoded = np.array(Image.open(back))
    assert decoded.shape == (96, 130, 3)
    original = torch.from_numpy(np.array(Image.open(png))).permute(2, 0, 1) / 255
    assert psnr(torch.from_numpy(decoded).permute(2, 0, 1) / 255, original) > 25


def test_decompress_writes_png_whatever_the_name(png, tmp_path):
    out = tmp_path / "a.nic"
    assert main(["compress", str(png), str(out)]) == 0
    assert main(["decompress", str(out), str(tmp_path / "decoded")]) == 0
    assert Image.open(tmp_path / "decoded").format == "PNG"


def test_the_readme_shows_what_make_demo_prints(tmp_path, capsys):
    """Every line of the README's demo block but the times (float32 on the CPU, as shown)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("`make demo` compresses", 1)[1].split("```\n", 2)[1]
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu",
                 "--precision", "float32"]) == 0
    printed = capsys.readouterr().out.replace(str(tmp_path), "out")

    def fixed(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith(("encode", "decode "))]

    assert fixed(printed) == fixed(block)


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


def test_refine_and_fractional_quality_options(png, tmp_path):
    out = tmp_path / "a.nic"
    assert main(["compress", str(png), str(out), "-q", "2.0", "--refine", "ssl",
                 "--iterations", "2"]) == 0
    assert main(["decompress", str(out), str(tmp_path / "b.png")]) == 0


@pytest.fixture
def bad_inputs(tmp_path, png) -> dict[str, str]:
    data = compress(png, quality=1, device="cpu")
    files = {"txt": "notes.txt", "empty": "empty.png", "cut": "cut.nic", "nic": "fine.nic",
             "flipped": "flipped.nic", "rgba": "rgba.png"}
    (tmp_path / files["txt"]).write_text("hello")
    (tmp_path / files["empty"]).write_bytes(b"")
    (tmp_path / files["cut"]).write_bytes(data[:100])
    (tmp_path / files["nic"]).write_bytes(data)
    (tmp_path / files["flipped"]).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    Image.new("RGBA", (8, 8)).save(tmp_path / files["rgba"])
    names = {k: str(tmp_path / v) for k, v in files.items()}
    names.update(png=str(png), out=str(tmp_path / "out.x"), missing=str(tmp_path / "nope.png"),
                 tmp=str(tmp_path))
    return names


@pytest.mark.parametrize("args, code, message", [
    (["compress", "{txt}", "{out}"], 1, "notes.txt: not an image Pillow can read"),
    (["compress", "{missing}", "{out}"], 1, "nope.png: no such file"),
    (["compress", "{empty}", "{out}"], 1, "not an image Pillow can read"),
    (["compress", "{rgba}", "{out}"], 1, "alpha channel"),
    (["compress", "{png}", "{tmp}/no/such/dir/x.nic"], 1, "No such file or directory"),
    (["compress", "{png}", "{out}", "-q", "9"], 1, "quality levels"),
    (["compress", "{png}", "{out}", "--device", "gpu"], 2, "unknown device"),
    (["compress", "{png}", "{out}", "--max-bytes", "100"], 2, "even at the lowest level"),
    (["compress", "{png}", "{out}", "--weights", "{txt}"], 1, "not a safetensors weights file"),
    (["decompress", "{txt}", "{out}"], 1, "notes.txt: not a nicengine stream"),
    (["decompress", "{cut}", "{out}"], 1, "cut.nic: truncated: stream 0 needs"),
    (["decompress", "{flipped}", "{out}"], 1, "CRC32 mismatch"),
    (["decompress", "{empty}", "{out}"], 1, "empty.png: empty stream"),
    (["decompress", "{tmp}", "{out}"], 1, "a folder, not a file"),
    (["info", "{cut}"], 1, "truncated"),
    (["eval", "{tmp}/nothing"], 1, "no images found"),
    (["compress", "{png}"], 2, "the following arguments are required"),
    (["compress", "{png}", "{out}", "--precision", "half"], 2, "invalid choice"),
    (["compress", "{png}", "{out}", "-q", "high"], 2, "invalid float value"),
    (["compress", "{png}", "{out}", "--iterations", "20"], 2, "--iterations needs --refine"),
    (["decompress", "{nic}", "{tmp}"], 1, "Is a directory"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_every_bad_input_is_one_line(bad_inputs, capsys, args, code, message):
    try:
        status = main([a.format(**bad_inputs) for a in args])
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code
    assert status == code
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "error:" in err[-1]
    assert len(err) == 1 or code == 2  # argparse puts its usage line first
    assert not any("Traceback" in line for line in err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
@pytest.mark.parametrize("command", [
    "compress {png} {out}", "decompress {png} {out}", "eval {tmp}", "demo --out {tmp}/demo",
    "compress-dir {tmp} {tmp}/cd --workers 1", "decompress-dir {tmp} {tmp}/dd --workers 1"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_a_usage_error_before_any_work(bad_inputs, capsys, command,
                                                             device):
    assert main([*command.format(**bad_inputs).split(), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: CUDA is not available: ")
    assert not any((Path(bad_inputs["tmp"]) / d).exists() for d in ("demo", "cd", "dd"))


def test_no_traceback_from_the_process(bad_inputs):
    """The same through a real process (what a user sees in a shell)."""
    result = subprocess.run([sys.executable, "-m", "engine", "compress", bad_inputs["txt"],
                             bad_inputs["out"]], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {bad_inputs['txt']}: not an image Pillow can read (cannot identify image "
        f"file '{bad_inputs['txt']}')"]
