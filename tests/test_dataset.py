"""Folder compression (engine.dataset, compress-dir, decompress-dir) on generated images: in this
process, in a process pool, on a local Ray cluster of 2 CPUs, and killed mid-run then rerun."""

from __future__ import annotations

import importlib.util
import logging
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from engine import DEFAULT_MODEL, DEFAULT_QUALITY, decompress, format, zoo
from engine.cli import main
from engine.dataset import (
    JOURNALS,
    MANIFEST,
    PART_SUFFIX,
    CompressOptions,
    Workers,
    compress_dir,
    decompress_dir,
    find_manifest,
    read_manifest,
)
from engine.images import to_batch, to_uint8
from engine.metrics import ms_ssim, psnr
from tests.conftest import smooth_image

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(96, 160), (160, 96), (128, 128)]
FORMATS = ["png", "jpg", "webp", "tiff"]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install 'nicengine[ray]'; "
                                      "make test installs it)")
# Ray Data's own settings warn of their deprecations when first read.
quiet_ray = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """20 images in three sizes and four formats in two folders, and a corrupt file."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(20):
        path = root / f"part{i % 2}" / f"img{i:02d}.{FORMATS[i % 4]}"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(to_uint8(smooth_image(*SIZES[i % 3], seed=i))).save(path)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))  # the signature, then junk
    return root


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """The corpus compressed in this process: (OUT, summary)."""
    out = tmp_path_factory.mktemp("reference")
    return out, compress_dir(corpus, out, workers=Workers(count=1), progress=False)


def streams(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*.nic")}


def rows_without_times(folder: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in read_manifest(folder).to_pylist()]


def assert_same_run(out: Path, reference: Path) -> None:
    """The same streams byte for byte, the same manifest but for times, nothing left over."""
    assert streams(out) == streams(reference)
    assert rows_without_times(out) == rows_without_times(reference)
    assert not list(out.rglob("*" + PART_SUFFIX)) and not list(out.glob(JOURNALS))


def rows_recorded(out: Path) -> int:
    """Rows a run left, in its manifest and in its journal."""
    saved = read_manifest(out).num_rows if find_manifest(out) else 0
    return saved + sum(j.read_text().count("\n") for j in out.glob(JOURNALS))


def run_and_interrupt(args: list[str], out: Path, sig: signal.Signals,
                      ready: Callable[[Path], object] = rows_recorded
                      ) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m engine ARGS` in a subprocess, sent `sig` once `ready(out)` (by default, once
    its first rows are journaled); and the seconds from the signal to its exit."""
    # SIGINT at its default in the child: an ignored SIGINT (SIG_IGN) is inherited across exec,
    # and Python then never raises KeyboardInterrupt (whatever earlier tests left in this process).
    proc = subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 300
    while not ready(out):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be interrupted: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no image was finished within 5 minutes")
        time.sleep(0.01)
    proc.send_signal(sig)
    sent = time.monotonic()
    stdout, stderr = proc.communicate(timeout=300)
    return (subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr),
            time.monotonic() - sent)


# --- in this process and in a process pool -------------------------------------------------------

def test_every_image_becomes_a_stream_and_a_manifest_row(corpus, reference):
    out, summary = reference
    assert (summary.files, summary.done, summary.skipped) == (21, 21, 0)
    [(path, error)] = summary.failures
    assert path == "broken.png" and "not an image Pillow can read" in error
    table = pq.read_table(out / MANIFEST)
    assert table.num_rows == 21 and table.column_names[:3] == ["path", "output", "width"]
    expected_fingerprint = f"{zoo.load(DEFAULT_MODEL, DEFAULT_QUALITY).info.fingerprint:08x}"
    for row in table.to_pylist():
        if row["path"] == "broken.png":
            assert row["output"] is None and row["bytes"] is None and error in row["error"]
            continue
        assert row["error"] is None and row["output"] == row["path"].rsplit(".", 1)[0] + ".nic"
        data = (out / row["output"]).read_bytes()
        original = to_batch(corpus / row["path"])[0]
        assert (row["height"], row["width"]) == original.shape[1:]
        assert row["bytes"] == len(data)
        assert row["bpp"] == pytest.approx(8 * len(data) / (row["width"] * row["height"]))
        assert row["fingerprint"] == f"{format.unpack(data)[0].fingerprint:08x}"
        assert row["fingerprint"] == expected_fingerprint
        assert row["psnr"] is None and row["ms_ssim"] is None and row["seconds"] > 0
    assert not list(out.rglob("*" + PART_SUFFIX)) and not list(out.glob(JOURNALS))


def test_metrics_are_those_of_the_decoded_images(corpus, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    for name in ("part0/img00.png", "part1/img01.jpg", "part0/img02.webp"):  # the three sizes
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / name, src / name)
    compress_dir(src, out, CompressOptions(metrics=True), Workers(count=1), progress=False)
    for row in read_manifest(out).to_pylist():
        decoded = decompress((out / row["output"]).read_bytes()).cpu()
        original = to_batch(src / row["path"])[0]
        # Decoded alone here, in a batch there: float rounding may move a pixel by a level.
        assert row["psnr"] == pytest.approx(psnr(decoded, original), abs=0.01)
        assert row["ms_ssim"] == pytest.approx(ms_ssim(decoded, original), abs=1e-4)
        assert row["psnr"] > 28 and row["ms_ssim"] > 0.9
    assert main(["eval", str(out)]) == 0
    assert "MS-SSIM" in capsys.readouterr().out


def test_the_manifest_reads_back_with_pandas(reference):
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    frame = pd.read_parquet(reference[0] / MANIFEST)
    assert len(frame) == 21 and frame["error"].notna().sum() == 1
    assert frame["bytes"].sum() == sum(len(d) for d in streams(reference[0]).values())


def test_a_rerun_skips_what_is_done_and_redoes_the_rest(corpus, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    (out / "part0/img00.nic").unlink()
    cut = out / "part1/img01.nic"
    cut.write_bytes(cut.read_bytes()[:50])
    untouched = out / "part0/img02.nic"
    mtime = untouched.stat().st_mtime_ns
    summary = compress_dir(corpus, out, workers=Workers(count=1), progress=False)
    assert (summary.done, summary.skipped, len(summary.failures)) == (3, 18, 1)
    assert untouched.stat().st_mtime_ns == mtime
    assert_same_run(out, reference[0])


def test_a_process_pool_writes_what_one_process_writes(corpus, reference, tmp_path):
    summary = compress_dir(corpus, tmp_path, workers=Workers(count=2, batch=4), progress=False)
    assert summary.done == 21
    assert_same_run(tmp_path, reference[0])


def test_a_killed_run_resumes_with_identical_outputs(corpus, reference, tmp_path):
    killed, _ = run_and_interrupt(["compress-dir", str(corpus), str(tmp_path), "--workers",
                                   "1", "--batch", "2"], tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    finished = rows_recorded(tmp_path)
    assert 1 <= finished < 21
    summary = compress_dir(corpus, tmp_path, workers=Workers(count=1), progress=False)
    assert summary.skipped >= finished - 1  # all but the corrupt file, if it was among them
    assert_same_run(tmp_path, reference[0])


def test_ctrl_c_stops_a_process_pool_at_once_and_keeps_every_finished_file(corpus, reference,
                                                                            tmp_path):
    # Interrupted as the first stream of a batch of 8 is written: its batch is unfinished.
    stopped, seconds = run_and_interrupt(["compress-dir", str(corpus), str(tmp_path),
                                          "--workers", "2", "--batch", "8"], tmp_path,
                                         signal.SIGINT, lambda out: streams(out))
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    assert "run the same command again to resume" in stopped.stderr
    assert seconds < 3  # 0.5 s on a quiet machine (benchmarks/interrupt.py); CI may be busier
    written = set(streams(tmp_path))
    recorded = {r["output"] for r in read_manifest(tmp_path).to_pylist()}
    assert written and written <= recorded and not list(tmp_path.glob(JOURNALS))
    summary = compress_dir(corpus, tmp_path, workers=Workers(count=1), progress=False)
    assert summary.skipped == len(written)
    assert_same_run(tmp_path, reference[0])


def test_another_model_recompresses_and_clashing_names_fail_alone(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "a.jpg", "b.png"):
        Image.fromarray(to_uint8(smooth_image(40, 56))).save(src / name)
    first = compress_dir(src, out, workers=Workers(count=1), progress=False)
    assert first.failures == (("a.png", "a.jpg is written to the same a.nic"),)
    other = next(q for q in zoo.shipped_qualities() if q != DEFAULT_QUALITY)
    again = compress_dir(src, out, CompressOptions(quality=other), Workers(count=1),
                         progress=False)
    assert (again.done, again.skipped) == (2, 0)
    fingerprints = {r["path"]: r["fingerprint"] for r in read_manifest(out).to_pylist()}
    assert fingerprints["b.png"] == f"{zoo.load(DEFAULT_MODEL, other).info.fingerprint:08x}"


def test_a_manifest_with_decimal_fingerprints_still_resumes(reference, corpus, tmp_path):
    """Manifests once held the fingerprint as an integer; `info` prints it in hex, as rows do
    now."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    table = pq.read_table(out / MANIFEST)
    old = [None if v is None else int(v, 16) for v in table.column("fingerprint").to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("fingerprint"), "fingerprint",
                                    pa.array(old, pa.int64())), out / MANIFEST)
    summary = compress_dir(corpus, out, workers=Workers(count=1), progress=False)
    assert (summary.done, summary.skipped) == (1, 20)  # the corrupt file only
    assert_same_run(out, reference[0])


def test_an_image_too_large_to_open_is_recorded(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(to_uint8(smooth_image(40, 56))).save(src / "fine.png")
    png = BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    data = bytearray(png.getvalue())  # its header now claims 30000 x 30000 pixels
    data[16:24] = struct.pack(">II", 30000, 30000)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (src / "huge.png").write_bytes(data)
    summary = compress_dir(src, tmp_path / "out", workers=Workers(count=1), progress=False)
    assert summary.done == 2 and [path for path, _ in summary.failures] == ["huge.png"]
    assert "decompression bomb" in summary.failures[0][1]
    assert (tmp_path / "out/fine.nic").is_file()


def test_decompress_dir_writes_the_decoded_images(reference, tmp_path):
    summary = decompress_dir(reference[0], tmp_path, Workers(count=1), progress=False)
    assert (summary.files, summary.done, summary.failures) == (20, 20, ())
    for name, data in streams(reference[0]).items():
        png = np.asarray(Image.open(tmp_path / name.replace(".nic", ".png"))).astype(int)
        # Decoded in a batch there, alone here: float rounding may move a pixel by a level.
        assert np.abs(png - to_uint8(decompress(data)).astype(int)).max() <= 1
    again = decompress_dir(reference[0], tmp_path, Workers(count=1), progress=False)
    assert (again.done, again.skipped) == (0, 20)


def test_decompress_dir_without_a_manifest_records_damaged_streams(reference, tmp_path):
    src = tmp_path / "streams"
    for name in ("part0/img00.nic", "part1/img01.nic", "part0/img02.nic"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(reference[0] / name, src / name)
    damaged = src / "part1/img01.nic"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    summary = decompress_dir(src, tmp_path / "png", Workers(count=1), progress=False)
    assert summary.done == 3 and len(summary.failures) == 1
    assert summary.failures[0][0] == "part1/img01.nic" and "CRC32" in summary.failures[0][1]
    assert sorted(p.name for p in (tmp_path / "png").rglob("*.png")) == ["img00.png", "img02.png"]


def test_command_line(corpus, reference, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    assert main(["compress-dir", str(corpus), str(out), "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "1 compressed, 20 done before, 1 failed" in captured.out
    assert "failed: broken.png" in captured.err and "1 of 21 files failed" in captured.err
    assert main(["eval", str(out), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "images     20 (1 failed)" in text and "PSNR       not measured" in text
    assert main(["decompress-dir", str(out), str(tmp_path / "png"), "--workers", "1"]) == 0
    assert "20 decoded" in capsys.readouterr().out
    assert main(["compress-dir", str(corpus), str(out), "--workers", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err


def test_bad_requests_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no images"):
        compress_dir(tmp_path, tmp_path / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="no manifest.parquet"):
        read_manifest(tmp_path)
    with pytest.raises(ValueError, match="at least 1"):
        Workers(batch=0)
    Image.fromarray(to_uint8(smooth_image(16, 16))).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ValueError, match=r"pip install 'nicengine\[ray\]'"):
        compress_dir(tmp_path, tmp_path / "out", workers=Workers(ray="local"), progress=False)


def test_the_engine_imports_without_ray():
    code = ("import sys, engine, engine.dataset, engine.pillow, engine.cli; "
            "sys.exit('ray' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# --- on Ray: one local cluster of 2 CPUs for the module ------------------------------------------

@pytest.fixture(scope="module")
def ray_address():
    import ray

    context = ray.init(address="local", num_cpus=2, include_dashboard=False,
                       log_to_driver=False, logging_level=logging.WARNING)
    yield context.address_info["address"]
    ray.shutdown()


@needs_ray
@quiet_ray
def test_ray_writes_what_one_process_writes(corpus, reference, ray_address, tmp_path):
    summary = compress_dir(corpus, tmp_path, workers=Workers(ray=ray_address, count=2, batch=4),
                           progress=False)
    assert summary.done == 21 and len(summary.failures) == 1
    assert_same_run(tmp_path, reference[0])


@needs_ray
@quiet_ray
def test_ray_run_interrupted_then_rerun_on_a_joined_cluster(corpus, reference, ray_address,
                                                            tmp_path):
    out = tmp_path
    args = ["compress-dir", str(corpus), str(out), "--workers", "2"]
    killed, _ = run_and_interrupt([*args, "--ray", "local", "--batch", "2"], out, signal.SIGINT)
    assert killed.returncode == 130, killed.stderr
    assert "run the same command again to resume" in killed.stderr
    finished = rows_recorded(out)
    assert 1 <= finished < 21
    rerun = subprocess.run([sys.executable, "-m", "engine", *args, "--ray", ray_address],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1 and "1 of 21 files failed" in rerun.stderr, rerun.stderr
    assert any(f"{n} done before" in rerun.stdout for n in (finished - 1, finished))
    assert_same_run(out, reference[0])


@needs_ray
@pytest.mark.slow
def test_a_ray_local_run_that_succeeds_is_quiet(corpus, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for name in ("part0/img00.png", "part1/img01.jpg"):
        shutil.copy(corpus / name, src)
    run = subprocess.run([sys.executable, "-m", "engine", "compress-dir", str(src),
                          str(tmp_path / "out"), "--ray", "local"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    # Nothing on stderr but the progress bar (tqdm redraws it with carriage returns).
    lines = [line for line in run.stderr.replace("\r", "\n").splitlines() if line.strip()]
    assert all(line.startswith("compress:") for line in lines), lines
