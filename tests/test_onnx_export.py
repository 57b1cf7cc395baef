"""ONNX export (engine/onnx_export.py): every kind's networks, run in ONNX Runtime on sizes with
odd latent dimensions, two sizes from one file, against torch; model.json and the command."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from engine.entropy.gaussian import scale_bounds, scale_indexes
from engine.models import (
    CaeConfig,
    ChannelConditional,
    ChannelConfig,
    CodingModel,
    CompressiveAutoencoder,
    ContextConfig,
    JointAutoregressive,
    MeanScaleHyperprior,
    ModelConfig,
)
from engine.models.factorized_prior import FactorizedPrior
from engine.models.integer_hyper import FakeIntegerHyper, IntegerHyper
from engine.models.scale_hyperprior import ScaleHyperprior
from engine.zoo import load, save_weights
from engine.zoo.__main__ import main

for _package in ("onnx", "onnxscript"):
    pytest.importorskip(_package, reason=f"ONNX export needs {_package} "
                                         f"(pip install 'nicengine[onnx]', or make test)")
ort = pytest.importorskip("onnxruntime", reason="the exported networks run in onnxruntime "
                                                "(pip install 'nicengine[onnx]', or make test)")

from engine.onnx_export import (  # noqa: E402 (needs onnx)
    EXPORTS,
    TABLES,
    export_onnx,
    integer_hyper_graph,
)


def _randomized(model: CodingModel) -> CodingModel:
    """Every parameter moved a little (the channel-conditional corrections start at zero)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.invalidate()
    return model.eval().requires_grad_(False)


# kind -> (a small model, its quality, two padded sizes whose latents have odd sides)
CASES = {
    "msh": (lambda: MeanScaleHyperprior(ModelConfig(8, 12)), 0.0, [(192, 320), (64, 128)]),
    "sh": (lambda: ScaleHyperprior(ModelConfig(8, 12)), 0.0, [(192, 320), (64, 128)]),
    "fp": (lambda: FactorizedPrior(ModelConfig(8, 12)), 0.0, [(80, 112), (48, 144)]),
    "cc": (lambda: ChannelConditional(ChannelConfig(N=8, M=12, slices=2, hidden=8,
                                                    checkerboard=True)),
           2.5, [(192, 320), (64, 128)]),
    "cae": (lambda: CompressiveAutoencoder(CaeConfig(channels=8, width=8, width1=8,
                                                     mixtures=2)),
            3.0, [(40, 56), (24, 72)]),
    "cheng": (lambda: JointAutoregressive(ContextConfig(8, 8, "cheng2020-attn")), 0.0,
              [(192, 320), (64, 128)]),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    build, quality, sizes = CASES[request.param]
    torch.manual_seed(0)
    model = _randomized(build())
    if isinstance(model, JointAutoregressive):  # it has tables only with its integer network
        model.attach_integer_hyper(model.calibrate(torch.rand(1, 3, 128, 128)))
    out = tmp_path_factory.mktemp(request.param)
    return model, quality, sizes, out, export_onnx(model, quality, out)


def test_networks_match_torch_on_two_sizes(exported):
    model, quality, sizes, out, doc = exported
    networks = EXPORTS[model.ARCH](model, quality).networks
    assert sorted(doc["networks"]) == sorted(n.name for n in networks)
    for net in networks:
        session = ort.InferenceSession(str(out / doc["networks"][net.name]["file"]),
                                       providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [p.name for p in net.inputs]
        for h, w in sizes:
            assert (h, w) == (model.padded(h), model.padded(w))
            inputs = [p.example(h, w) for p in net.inputs]
            with torch.no_grad():
                expected = net.fn(*inputs)
            expected = expected if isinstance(expected, tuple) else (expected,)
            got = session.run(None, {p.name: x.numpy() for p, x in zip(net.inputs, inputs,
                                                                       strict=True)})
            for port, e, g in zip(net.outputs, expected, got, strict=True):
                assert g.shape == (2, port.channels, h // port.stride, w // port.stride)
                err = float(np.abs(g - e.numpy()).max())
                assert err <= 1e-4, f"{net.name}.{port.name} at {h}x{w}: {err}"


def test_model_json_and_tables(exported):
    model, quality, _, out, doc = exported
    assert json.loads((out / "model.json").read_text()) == doc
    assert doc["model"]["kind"] == model.ARCH and doc["model"]["quality"] == quality
    assert doc["align"] == model.ALIGN
    tables = np.load(out / TABLES)
    assert (tables["cdfs"] == model.tables().cdfs).all()
    assert (tables["sizes"] == model.tables().sizes).all()
    assert sorted(doc["tables"]["arrays"]) == sorted(set(tables.files) - {"cdfs", "sizes",
                                                                          "offsets"})
    assert {"g_a", "g_s"} <= set(doc["networks"])
    for entry in doc["networks"].values():
        assert (out / entry["file"]).is_file()
        assert entry["inputs"] and entry["outputs"] and entry["use"]


def test_integer_hyper_decoder_is_exact():
    """The shipped model's integer hyper-decoder as ONNX: the engine's scales, means and y table
    indexes, bit for bit, on odd latent sizes."""
    model = load("msh", 3)
    n = model.config.N
    session = ort.InferenceSession(integer_hyper_graph(model.integer_hyper, n)
                                   .SerializeToString(), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(0)
    for shape in [(2, n, 3, 5), (1, n, 5, 7)]:
        z_hat = (torch.round(4 * torch.randn(shape, generator=g))
                 + model.entropy_z.medians.view(1, -1, 1, 1))
        scales, means, bounds = model.hyper_decode(z_hat, integer=True)
        got = session.run(None, {"z_hat": z_hat.numpy()})
        assert (got[0] == scales.numpy()).all() and (got[1] == means.numpy()).all()
        assert (got[2] == (scale_indexes(scales, bounds) + n).numpy()).all()


def test_json_states_how_tables_are_decided(tmp_path):
    """A hyperprior with an integer hyper-decoder exports it and says that table decisions
    need it; the export leaves NIC_KERNELS as it was."""
    model = _randomized(MeanScaleHyperprior(ModelConfig(8, 12)))
    z_hat = torch.randn(1, 8, 4, 4)
    fake = FakeIntegerHyper(model.h_s, FakeIntegerHyper.calibrate(model.h_s, z_hat))
    model.attach_integer_hyper(IntegerHyper.build(fake, scale_bounds(z_hat.double()),
                                                  model.tables()))
    before = os.environ.get("NIC_KERNELS")
    doc = export_onnx(model, 0.0, tmp_path)
    assert os.environ.get("NIC_KERNELS") == before
    assert "h_s_integer.onnx is it, bit-exact" in doc["coding"]["table_decisions"]
    assert doc["networks"]["h_s_integer"]["outputs"][2]["dtype"] == "int32"
    assert doc["model"]["integer_hyper_fingerprint"] is not None
    assert "scale_thresholds" in doc["tables"]["arrays"]


def test_command(tmp_path, capsys):
    model = _randomized(FactorizedPrior(ModelConfig(8, 12)))
    weights = tmp_path / "fp.safetensors"
    save_weights(model, weights, storage="float32", quality=2)
    assert main(["export-onnx", str(tmp_path / "out"), "--weights", str(weights)]) == 0
    assert "g_a, g_s as ONNX" in capsys.readouterr().out
    doc = json.loads((tmp_path / "out" / "model.json").read_text())
    assert doc["model"]["quality"] == 2 and doc["model"]["weights"] == str(weights)

    def error(*args: str) -> str:
        assert main(["export-onnx", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1
        return err

    assert "no shipped model 'nope'" in error(str(tmp_path / "x"), "--model", "nope")
    (tmp_path / "file").write_text("")
    assert "Not a directory" in error(str(tmp_path / "file" / "out"), "--weights", str(weights))
    assert "quality 2, not 3" in error(str(tmp_path / "y"), "--weights", str(weights),
                                       "--quality", "3")
    cae = tmp_path / "cae.safetensors"
    save_weights(CompressiveAutoencoder(CaeConfig(channels=8, width=8, width1=8, mixtures=2)),
                 cae)
    assert "give --quality in [1, 6]" in error(str(tmp_path / "z"), "--weights", str(cae))
    assert "no such weights file" in error(str(tmp_path / "z"), "--weights",
                                           str(tmp_path / "absent.safetensors"))
