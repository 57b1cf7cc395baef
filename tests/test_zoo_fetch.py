"""Models by name from CompressAI's published zoo (engine/zoo/published.py): fetched from a
local HTTP server that serves checkpoints CompressAI makes here (tiny N and M), verified,
imported, cached under tmp_path, and found again by name and by stream."""

from __future__ import annotations

import hashlib
import http.server
import io
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

import engine
from engine import CodecError, cli, zoo
from engine.images import save_png
from engine.zoo import published
from engine.zoo.__main__ import main
from engine.zoo.compressai import ZOO_LAMBDAS
from tests.compressai_reference import compressai_or_skip
from tests.conftest import smooth_image

ARCHS = {"bmshj2018-factorized": "FactorizedPrior", "bmshj2018-hyperprior": "ScaleHyperprior",
         "mbt2018-mean": "MeanScaleHyperprior", "mbt2018": "JointAutoregressiveHierarchicalPriors",
         "cheng2020-anchor": "Cheng2020Anchor"}  # CompressAI's classes of the names


class Server:
    """Serves `files` (name -> bytes) on 127.0.0.1 from a daemon thread; names in `short` get
    half their bytes under the full Content-Length, names in `stall` their headers, then nothing
    for a second. Stops at stop(), or by itself after 60 s."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.short: set[str] = set()
        self.stall: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append(name)
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if name in server.stall:
                    time.sleep(1)
                self.wfile.write(data[: len(data) // 2] if name in server.short else data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.timer = threading.Timer(60, self.stop)
        self.timer.daemon = True
        self.timer.start()

    def put(self, name: str, data: bytes) -> str:
        self.files[name] = data
        return f"{self.url}/{name}"

    def stop(self) -> None:
        self.timer.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """Every test's own cache, never the user's; CompressAI's address unless a test sets one."""
    monkeypatch.setenv("NICENGINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("NICENGINE_ZOO_URL", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def checkpoints() -> dict[str, bytes]:
    """A checkpoint of each architecture, saved as CompressAI's training example saves them."""
    compressai = compressai_or_skip()
    torch.manual_seed(0)
    out = {}
    for name, cls in ARCHS.items():
        cls = getattr(compressai.models, cls)
        net = cls(N=8) if name.startswith("cheng") else cls(N=8, M=12)
        net.update(force=True)
        buf = io.BytesIO()
        torch.save({"epoch": 1, "state_dict": net.state_dict(), "loss": torch.tensor(1.0)}, buf)
        out[name] = buf.getvalue()
    return out


def publish(server: Server, monkeypatch, name: str, data: bytes) -> str:
    """Serve `data` as the zoo's checkpoint of `name` at every level, under a file name with its
    own SHA-256 prefix (the table patched to name it), and point NICENGINE_ZOO_URL at it; the
    file name."""
    prefix = hashlib.sha256(data).hexdigest()[:8]
    monkeypatch.setitem(published.CHECKPOINTS, name, (f"test-{name}", (prefix,) * 8))
    monkeypatch.setenv("NICENGINE_ZOO_URL", server.url + "/")
    for q in range(1, 9):
        server.put(f"test-{name}-{q}-{prefix}.pth.tar", data)
    return f"test-{name}-3-{prefix}.pth.tar"


def cached_files(cache: Path) -> list[str]:
    """Everything in the zoo cache, temporary folders included."""
    return sorted(p.name for p in (cache / "zoo").glob("*")) if cache.is_dir() else []


# --- the table and the cache's place ------------------------------------------------------------

def test_the_table_is_compressais_and_the_base_url_can_change(monkeypatch):
    compressai_or_skip()
    from compressai.zoo.image import model_urls

    for name, (_, prefixes) in published.CHECKPOINTS.items():
        assert [published.checkpoint_url(name, q) for q in range(1, len(prefixes) + 1)] == [
            (url, url.rsplit("-", 1)[1].removesuffix(".pth.tar"))
            for url in model_urls[name]["mse"].values()], name
    assert published.checkpoint_url("mbt2018", 3)[0] == (
        "https://compressai.s3.amazonaws.com/models/v1/mbt2018-3-22901978.pth.tar")
    monkeypatch.setenv("NICENGINE_ZOO_URL", "file:///mnt/mirror/")
    assert published.checkpoint_url("mbt2018-mean", 2) == (
        "file:///mnt/mirror/mbt2018-mean-2-e54a039d.pth.tar", "e54a039d")
    models = zoo.zoo_models()
    assert {"bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"} <= models.keys()
    assert models["mbt2018-mean"] == tuple(range(1, 9))
    assert not models.keys() & zoo.shipped_models().keys()


def test_cache_dir_from_the_environment(monkeypatch, tmp_path, cache):
    assert zoo.cache_dir() == cache
    monkeypatch.delenv("NICENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "nicengine"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative")  # ignored, as the XDG rules say
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert zoo.cache_dir() == tmp_path / "home" / ".cache" / "nicengine"


def test_unknown_names_list_shipped_and_zoo_models():
    with pytest.raises(ValueError, match=r"no shipped model 'nope'.*msh.*mbt2018-mean"):
        engine.Codec(model="nope")
    with pytest.raises(ValueError, match=r"quality levels \[1, 2, 3, 4, 5, 6, 7, 8\], not 9"):
        engine.Codec(model="mbt2018-mean", quality=9)


# --- fetching -------------------------------------------------------------------------------

def test_fetch_by_name_then_the_cache_serves_it_without_network(server, monkeypatch, cache,
                                                               checkpoints, capsys, tmp_path):
    name = publish(server, monkeypatch, "bmshj2018-hyperprior", checkpoints["bmshj2018-hyperprior"])
    assert main(["fetch", "bmshj2018-hyperprior", "--quality", "3"]) == 0
    assert "(fetched)" in capsys.readouterr().out
    assert cached_files(cache) == ["bmshj2018-hyperprior-q3.safetensors"]  # no temporary left
    model = zoo.load("bmshj2018-hyperprior", 3)
    assert model.info.path == str(cache / "zoo" / "bmshj2018-hyperprior-q3.safetensors")
    assert model.info.meta["checkpoint"] == name and model.info.lam == ZOO_LAMBDAS[3]
    assert (model.info.quality, model.config.N, model.config.M) == (3, 8, 12)

    server.stop()
    # Another process's view: a cache this process has not loaded from yet.
    shutil.copytree(cache, tmp_path / "copy")
    monkeypatch.setenv("NICENGINE_CACHE", str(tmp_path / "copy"))
    assert main(["fetch", "bmshj2018-hyperprior", "--quality", "3"]) == 0
    assert "(cached before)" in capsys.readouterr().out
    assert zoo.load("bmshj2018-hyperprior", 3).info.fingerprint == model.info.fingerprint
    assert server.requests == [name]


def test_explicit_url_and_sha256_replace_the_cached_copy(server, cache, checkpoints, capsys):
    data = checkpoints["mbt2018-mean"]
    url = server.put("my-own.pth.tar", data)
    sha = hashlib.sha256(data).hexdigest()
    assert main(["fetch", "mbt2018-mean", "-q", "2", "--url", url, "--sha256", sha[:12]]) == 0
    assert f"fetched from {url}" in capsys.readouterr().out
    first = zoo.load("mbt2018-mean", 2)
    assert first.info.meta["checkpoint"] == "my-own.pth.tar"

    other = torch.load(io.BytesIO(data), weights_only=True)
    other["state_dict"]["g_a.0.bias"] += 0.5
    buf = io.BytesIO()
    torch.save(other, buf)
    url = server.put("other.pth.tar", buf.getvalue())
    model = zoo.fetch("mbt2018-mean", 2, url, hashlib.sha256(buf.getvalue()).hexdigest())
    assert model.info.fingerprint != first.info.fingerprint
    assert zoo.load("mbt2018-mean", 2) is model
    assert cached_files(cache) == ["mbt2018-mean-q2.safetensors"]


def test_hash_mismatch_caches_nothing(server, monkeypatch, cache, checkpoints, capsys):
    data = checkpoints["bmshj2018-factorized"]
    url = server.put("x.pth.tar", data)
    with pytest.raises(zoo.FetchError, match="SHA-256 .* is not the 00000000 expected"):
        zoo.fetch("bmshj2018-factorized", 1, url, "00000000")
    # By name: a served file whose content is not what its name's prefix says.
    publish(server, monkeypatch, "bmshj2018-factorized", data)
    for name in list(server.files):
        server.files[name] = data + b"x"
    assert main(["fetch", "bmshj2018-factorized", "-q", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "SHA-256" in err and "nothing cached" in err
    assert cached_files(cache) == []


def test_truncated_download_caches_nothing(server, monkeypatch, cache, checkpoints):
    name = publish(server, monkeypatch, "mbt2018-mean", checkpoints["mbt2018-mean"])
    server.short.add(name)
    n = len(checkpoints["mbt2018-mean"])
    with pytest.raises(zoo.FetchError, match=rf"truncated download \({n // 2} of {n} bytes\)"):
        zoo.load("mbt2018-mean", 3)
    assert cached_files(cache) == []


def test_a_stalled_download_times_out(server, cache, checkpoints):
    url = server.put("slow.pth.tar", checkpoints["mbt2018-mean"])
    server.stall.add("slow.pth.tar")
    with pytest.raises(zoo.FetchError, match=rf"from {url} \(timed out\)"):
        zoo.fetch("mbt2018-mean", 1, url, "00000000", timeout=0.2)
    assert cached_files(cache) == []


def test_a_file_torch_cannot_read_caches_nothing(server, cache, checkpoints):
    """A cut file whose hash is right (a server that sent no Content-Length, say)."""
    cut = checkpoints["mbt2018-mean"][:2000]
    url = server.put("cut.pth.tar", cut)
    with pytest.raises(zoo.FetchError) as caught:
        zoo.fetch("mbt2018-mean", 1, url, hashlib.sha256(cut).hexdigest())
    assert f"{url}: not a PyTorch checkpoint" in str(caught.value)
    assert ".fetch-" not in str(caught.value)  # the temporary file is not named
    assert cached_files(cache) == []


def test_offline_without_a_cached_copy(server, monkeypatch, cache, checkpoints, capsys):
    publish(server, monkeypatch, "bmshj2018-hyperprior", checkpoints["bmshj2018-hyperprior"])
    server.stop()
    url, _ = published.checkpoint_url("bmshj2018-hyperprior", 2)
    with pytest.raises(zoo.FetchError) as caught:
        engine.compress(smooth_image(16, 16), model="bmshj2018-hyperprior", quality=2,
                        device="cpu")
    text = str(caught.value)
    assert f"from {url} (" in text
    assert ("python -m engine.zoo import-compressai CKPT "
            f"{cache / 'zoo' / 'bmshj2018-hyperprior-q2.safetensors'} "
            "--arch bmshj2018-hyperprior --quality 2") in text
    assert main(["fetch", "bmshj2018-hyperprior", "-q", "2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot fetch")
    assert cached_files(cache) == []


def test_http_error_names_the_address(server, monkeypatch, checkpoints):
    monkeypatch.setenv("NICENGINE_ZOO_URL", server.url)
    with pytest.raises(zoo.FetchError, match=r"/mbt2018-mean-1-e522738d.pth.tar \(HTTP 404"):
        zoo.load("mbt2018-mean", 1)


# --- models by name in the API and CLI ---------------------------------------------------------

@pytest.mark.parametrize("name", ["mbt2018-mean", "mbt2018", "cheng2020-anchor"])
def test_compress_by_name_and_decompress_from_the_cache(name, server, monkeypatch, cache,
                                                       checkpoints, tmp_path):
    publish(server, monkeypatch, name, checkpoints[name])
    image = smooth_image(24, 40)
    data = engine.compress(image, model=name, quality=2, device="cpu")
    assert len(server.requests) == 1
    x_hat = engine.decompress(data, device="cpu")
    codec = engine.Codec(model=name, quality=2, device="cpu")
    assert codec.compress(image) == data
    expected = engine.Codec(weights=cache / "zoo" / f"{name}-q2.safetensors",
                            device="cpu").decompress(data)
    assert x_hat.shape == image.shape and torch.equal(x_hat, expected)

    server.stop()
    shutil.copytree(cache, tmp_path / "copy")  # decoding reads the cache, without network
    monkeypatch.setenv("NICENGINE_CACHE", str(tmp_path / "copy"))
    assert torch.equal(engine.decompress(data, device="cpu"), x_hat)
    monkeypatch.setenv("NICENGINE_CACHE", str(tmp_path / "empty"))
    with pytest.raises(CodecError, match=r"not shipped.*python -m engine\.zoo fetch NAME "
                                         r"--quality 2\)"):
        engine.decompress(data, device="cpu")
    assert len(server.requests) == 1


def test_command_line_model_by_name(server, monkeypatch, checkpoints, tmp_path):
    publish(server, monkeypatch, "bmshj2018-factorized", checkpoints["bmshj2018-factorized"])
    png, nic, out = tmp_path / "in.png", tmp_path / "in.nic", tmp_path / "out.png"
    save_png(smooth_image(20, 30), png)
    assert cli.main(["compress", str(png), str(nic), "--model", "bmshj2018-factorized", "-q", "4",
                     "--device", "cpu"]) == 0
    assert cli.main(["decompress", str(nic), str(out), "--device", "cpu"]) == 0
    assert out.is_file()
    with pytest.raises(SystemExit) as usage:
        cli.main(["compress", str(png), str(nic), "--model", "nope"])
    assert usage.value.code == 2


@pytest.mark.parametrize("argv", [
    ["fetch", "nope", "-q", "1"],
    ["fetch", "mbt2018-mean"],
    ["fetch", "mbt2018-mean", "-q", "9"],
    ["fetch", "mbt2018-mean", "-q", "1", "--url", "http://127.0.0.1:1/x.pth.tar"],
    ["fetch", "mbt2018-mean", "-q", "1", "--sha256", "0123abcd"],
    ["fetch", "mbt2018-mean", "-q", "1", "--url", "http://127.0.0.1:1/x", "--sha256", "xyz"],
])
def test_fetch_usage_errors_exit_2(argv, capsys, cache):
    with pytest.raises(SystemExit) as usage:
        main(argv)
    assert usage.value.code == 2
    assert cached_files(cache) == []


def test_a_byte_budget_fetches_only_the_levels_it_tries(server, monkeypatch, cache, checkpoints):
    publish(server, monkeypatch, "mbt2018-mean", checkpoints["mbt2018-mean"])
    image = smooth_image(24, 40)
    data = engine.compress(image, model="mbt2018-mean", max_bytes=10**6, device="cpu")
    assert engine.Codec(device="cpu").decompress(data).shape == image.shape
    assert len(server.requests) <= 5  # the codec's own level, and at most 4 of 8 bisected
    with pytest.raises(ValueError, match="even at the lowest level"):
        engine.compress(image, model="mbt2018-mean", max_bytes=10, device="cpu")
