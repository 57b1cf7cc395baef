"""Importing CompressAI checkpoints (engine/zoo/compressai.py), without CompressAI: the state
dicts are made here with CompressAI's key names and shapes, and CompressAI's layers (transposed
convolutions, GDN with its reparametrisation) are written out below as the reference."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
import torch.nn.functional as F

import engine
from engine.models import MeanScaleHyperprior
from engine.models.layers import SubpelConv
from engine.refine import Refine
from engine.zoo import load_weights
from engine.zoo.__main__ import main
from engine.zoo.compressai import (
    ZOO_LAMBDAS,
    convert_state_dict,
    import_compressai,
    read_checkpoint,
    subpel_from_deconv,
)
from tests.conftest import smooth_image

N, M = 8, 12  # CompressAI's zoo uses 128/192 and 192/320; any N, M import
PEDESTAL = 2.0**-36  # CompressAI's NonNegativeParametrizer: reparam_offset 2^-18, squared


# --- CompressAI's layers, as the reference ---------------------------------------------------

def deconv(x, state, key):
    return F.conv_transpose2d(x, state[f"{key}.weight"], state[f"{key}.bias"], stride=2,
                              padding=2, output_padding=1)


def conv(x, state, key):
    k = state[f"{key}.weight"].shape[-1]
    return F.conv2d(x, state[f"{key}.weight"], state[f"{key}.bias"], stride=2 if k == 5 else 1,
                    padding=k // 2)


def gdn(x, state, key, inverse=False):
    def effective(name):
        bound = state[f"{key}.{name}_reparam.lower_bound.bound"]
        return torch.maximum(state[f"{key}.{name}"], bound) ** 2 - state[
            f"{key}.{name}_reparam.pedestal"]

    c = x.shape[1]
    norm = F.conv2d(x**2, effective("gamma").reshape(c, c, 1, 1), effective("beta"))
    return x * (torch.sqrt(norm) if inverse else torch.rsqrt(norm))


def g_a(x, s):
    for i in (0, 2, 4):
        x = gdn(conv(x, s, f"g_a.{i}"), s, f"g_a.{i + 1}")
    return conv(x, s, "g_a.6")


def g_s(y, s):
    for i in (0, 2, 4):
        y = gdn(deconv(y, s, f"g_s.{i}"), s, f"g_s.{i + 1}", inverse=True)
    return deconv(y, s, "g_s.6")


def reference(arch, s, x):
    """CompressAI's compress + decompress of x (B, 3, H, W), H and W multiples of 64."""
    y = g_a(x, s)
    eb = "entropy_bottleneck"
    if arch == "bmshj2018-factorized":
        med = s[f"{eb}.quantiles"][:, 0, 1].view(1, -1, 1, 1)
        return g_s(torch.round(y - med) + med, s).clamp(0, 1)
    act = F.relu if arch == "bmshj2018-hyperprior" else F.leaky_relu
    z = conv(act(conv(act(conv(y.abs() if act is F.relu else y, s, "h_a.0")), s, "h_a.2")), s,
             "h_a.4")
    med = s[f"{eb}.quantiles"][:, 0, 1].view(1, -1, 1, 1)
    z_hat = torch.round(z - med) + med
    h = conv(act(deconv(act(deconv(z_hat, s, "h_s.0")), s, "h_s.2")), s, "h_s.4")
    means = 0 if arch == "bmshj2018-hyperprior" else h.chunk(2, 1)[1]
    return g_s(torch.round(y - means) + means, s).clamp(0, 1)


# --- CompressAI-shaped state dicts -----------------------------------------------------------

def compressai_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under CompressAI's key names and shapes (1.2.x, after update() for the
    derived buffers' presence), scaled so that every layer passes a signal on."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}

    def conv_w(key, c_in, c_out, k=5):
        s[f"{key}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) / math.sqrt(c_in * k * k)
        s[f"{key}.bias"] = 0.1 * torch.randn(c_out, generator=g)

    def deconv_w(key, c_in, c_out):
        s[f"{key}.weight"] = 2 * torch.randn(c_in, c_out, 5, 5, generator=g) / math.sqrt(
            c_in * 25)
        s[f"{key}.bias"] = 0.1 * torch.randn(c_out, generator=g)

    def gdn_w(key, c):
        s[f"{key}.beta"] = torch.sqrt(1 + 0.5 * torch.rand(c, generator=g) + PEDESTAL)
        s[f"{key}.gamma"] = torch.sqrt(0.1 * torch.eye(c) + 0.01 * torch.rand(c, c, generator=g)
                                       + PEDESTAL)
        s[f"{key}.gamma"][0, 1] = 0.0  # below the bound: the reparametrisation lifts it
        for name, minimum in (("beta", 1e-6), ("gamma", 0.0)):
            s[f"{key}.{name}_reparam.pedestal"] = torch.tensor([PEDESTAL])
            s[f"{key}.{name}_reparam.lower_bound.bound"] = torch.tensor(
                [math.sqrt(minimum + PEDESTAL)])

    def derived(key):
        for name in ("_offset", "_quantized_cdf", "_cdf_length"):
            s[f"{key}.{name}"] = torch.zeros(3, dtype=torch.int32)

    def bottleneck(c):
        eb = "entropy_bottleneck"
        dims = (1, 3, 3, 3, 3, 1)
        for i in range(5):
            s[f"{eb}.matrices.{i}"] = 0.3 * torch.randn(c, dims[i + 1], dims[i], generator=g)
            s[f"{eb}.biases.{i}"] = torch.rand(c, dims[i + 1], 1, generator=g) - 0.5
            if i < 4:
                s[f"{eb}.factors.{i}"] = 0.1 * torch.randn(c, dims[i + 1], 1, generator=g)
        spread = torch.tensor([-8.0, 0.0, 8.0]) + 0.3 * torch.randn(c, 1, 1, generator=g)
        s[f"{eb}.quantiles"] = spread
        t = math.log(2 / 1e-9 - 1)
        s[f"{eb}.target"] = torch.tensor([-t, 0.0, t])
        s[f"{eb}.likelihood_lower_bound.bound"] = torch.tensor([1e-9])
        derived(eb)

    conv_w("g_a.0", 3, N)
    for i in (2, 4):
        conv_w(f"g_a.{i}", N, N)
    conv_w("g_a.6", N, M)
    for i in (1, 3, 5):
        gdn_w(f"g_a.{i}", N)
        gdn_w(f"g_s.{i}", N)
    deconv_w("g_s.0", M, N)
    deconv_w("g_s.2", N, N)
    deconv_w("g_s.4", N, N)
    deconv_w("g_s.6", N, 3)
    if arch == "bmshj2018-factorized":
        bottleneck(M)
        return s
    conv_w("h_a.0", M, N, 3)
    conv_w("h_a.2", N, N)
    conv_w("h_a.4", N, N)
    bottleneck(N)
    if arch == "bmshj2018-hyperprior":
        deconv_w("h_s.0", N, N)
        deconv_w("h_s.2", N, N)
        conv_w("h_s.4", N, M, 3)
    else:
        deconv_w("h_s.0", N, M)
        deconv_w("h_s.2", M, M * 3 // 2)
        conv_w("h_s.4", M * 3 // 2, 2 * M, 3)
    gc = "gaussian_conditional"
    s[f"{gc}.scale_table"] = torch.exp(torch.linspace(math.log(0.11), math.log(256), 64))
    s[f"{gc}.scale_bound"] = torch.tensor([0.11])
    s[f"{gc}.lower_bound_scale.bound"] = torch.tensor([0.11])
    s[f"{gc}.likelihood_lower_bound.bound"] = torch.tensor([1e-9])
    derived(gc)
    return s


def training_checkpoint(state: dict) -> dict:
    """What CompressAI's training example saves: the state dict beside the optimisers'."""
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt = torch.optim.Adam(params, lr=1e-4)
    params[0].grad = torch.ones(2)
    opt.step()
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "min")
    return {"epoch": 7, "state_dict": state, "loss": 0.5, "optimizer": opt.state_dict(),
            "aux_optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict()}


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return smooth_image(128, 192)[None]


# --- the exact conversion --------------------------------------------------------------------

@pytest.mark.parametrize("c_in, c_out", [(12, 8), (8, 3), (8, 12), (12, 18)])  # g_s and h_s
@pytest.mark.parametrize("h, w", [(5, 7), (8, 6), (1, 1), (4, 9)])
def test_subpel_from_deconv_is_exact(c_in, c_out, h, w):
    g = torch.Generator().manual_seed(c_in * 100 + h)
    weight = torch.randn(c_in, c_out, 5, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(c_out, generator=g, dtype=torch.float64)
    x = torch.randn(2, c_in, h, w, generator=g, dtype=torch.float64)
    expected = F.conv_transpose2d(x, weight, bias, stride=2, padding=2, output_padding=1)
    w3, b3 = subpel_from_deconv(weight, bias)
    assert w3.shape == (4 * c_out, c_in, 3, 3) and b3.shape == (4 * c_out,)
    got = F.pixel_shuffle(F.conv2d(x, w3, padding=1) + b3.view(1, -1, 1, 1), 2)
    assert got.shape == expected.shape == (2, c_out, 2 * h, 2 * w)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    # The engine's layer (its conv, bias, shuffle epilogue) in float32; its CPU convolution may
    # be NNPACK's Winograd one, which rounds differently (~1e-4, engine/models/layers.py).
    layer = SubpelConv(c_in, c_out)
    layer.load_state_dict({"conv.weight": w3.float(), "bias": b3.float()})
    with torch.no_grad():
        torch.testing.assert_close(layer(x.float()), expected.float(), rtol=0, atol=1e-3)


# --- whole architectures -----------------------------------------------------------------------

# The hyperprior kinds; the joint autoregressive ones are checked against CompressAI itself
# (tests/test_context_model.py).
HYPERPRIOR_ARCHS = ["bmshj2018-factorized", "bmshj2018-hyperprior", "mbt2018-mean"]


@pytest.mark.parametrize("arch", HYPERPRIOR_ARCHS)
def test_import_equals_compressai_and_round_trips(arch, image, tmp_path):
    state = compressai_state(arch)
    model = convert_state_dict(state, arch)
    assert (model.config.N, model.config.M) == (N, M)
    with torch.no_grad():
        expected = reference(arch, state, image)
        encoded = model.encode_latents(model.analyze(image), 0)
        ours = model.reconstruct(encoded, *image.shape[2:], 0)
    assert expected.std() > 0.01  # the weights pass a signal on
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-3)  # Winograd g_s: see above

    ckpt, out = tmp_path / "checkpoint.pth.tar", tmp_path / "imported.safetensors"
    torch.save(training_checkpoint(state), ckpt)
    loaded = import_compressai(ckpt, out, arch, quality=3)
    assert loaded.info.quality == 3 and loaded.info.lam == ZOO_LAMBDAS[3]
    assert loaded.info.meta["epoch"] == 7 and loaded.info.meta["compressai_arch"] == arch
    codec = engine.Codec(weights=out, precision="float32")
    odd = image[:, :, :100, :150]  # the codec pads and crops
    for x in (image, odd):
        data = codec.compress(x)
        decoded = codec.decompress(data)
        with torch.no_grad():
            direct = loaded.reconstruct(loaded.encode_latents(loaded.analyze(loaded.pad(x)), 0),
                                        *x.shape[2:], 0)
        torch.testing.assert_close(decoded, direct[0, :, : x.shape[2], : x.shape[3]],
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior"])
def test_new_kinds_train(arch, image):
    """The training pass of the two kinds CompressAI's architectures added: shapes, and gradients
    that reach every parameter but the quantiles (which the aux loss trains)."""
    model = convert_state_dict(compressai_state(arch), arch).train().requires_grad_(True)
    out = model(image)
    assert out["x_hat"].shape == image.shape
    shapes = [lik.shape[1:] for lik in out["likelihoods"]]
    assert shapes == [(M, 8, 12), (N, 2, 3)][: len(shapes)]
    assert len(shapes) == (1 if arch == "bmshj2018-factorized" else 2)
    loss = sum(-lik.log2().sum() for lik in out["likelihoods"]) + (out["x_hat"] - image).square(
    ).sum()
    loss.backward()
    model.aux_loss().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_factorized_bits_gathered_equal_element_wise(image):
    model = convert_state_dict(compressai_state("bmshj2018-factorized"), "bmshj2018-factorized")
    with torch.no_grad():
        (y,) = model.analyze(image)
        for scale in (1, 300):  # a short range of values (gathered), a long one (element-wise)
            symbols = model.entropy_y.symbols(torch.cat([y, 0.5 * y]) * scale)
            direct = model.entropy_y.likelihood(model.entropy_y.dequantize(symbols))
            torch.testing.assert_close(model.bits(symbols), -direct.log2().flatten(1).sum(1))


@pytest.mark.parametrize("arch", ["bmshj2018-factorized", "bmshj2018-hyperprior"])
def test_new_kinds_refine(arch, image):
    model = convert_state_dict(compressai_state(arch), arch)
    codec = engine.Codec(weights=model, precision="float32")
    refine = Refine(method="ssl", iterations=4, lr=0.05, lam=0.01)
    data = codec.compress(image, refine=refine)
    assert codec.decompress(data).shape == image.shape[1:]


def test_kinds_differ_in_streams(image, tmp_path):
    """A stream names its model kind: another kind's weights refuse it."""
    state = compressai_state("mbt2018-mean")
    data = engine.Codec(weights=convert_state_dict(state, "mbt2018-mean")).compress(image)
    other = convert_state_dict(compressai_state("bmshj2018-hyperprior"), "bmshj2018-hyperprior")
    with pytest.raises(engine.CodecError, match="model kind 1"):
        engine.Codec(weights=other).decompress(data)
    assert isinstance(convert_state_dict(state, "mbt2018-mean"), MeanScaleHyperprior)


# --- checkpoint forms ----------------------------------------------------------------------

def test_checkpoint_forms(tmp_path):
    state = compressai_state("mbt2018-mean")
    expected = convert_state_dict(state, "mbt2018-mean").state_dict()
    old_names = {k.replace("entropy_bottleneck.matrices.", "entropy_bottleneck._matrices.")
                 .replace("entropy_bottleneck.biases.", "entropy_bottleneck._bias")
                 : v for k, v in state.items()}
    forms = {"bare": state, "wrapped": training_checkpoint(state),
             "dataparallel": {"state_dict": {f"module.{k}": v for k, v in state.items()}},
             "old_names": old_names}
    for name, data in forms.items():
        torch.save(data, tmp_path / name)
        read, _ = read_checkpoint(tmp_path / name)
        got = convert_state_dict(read, "mbt2018-mean").state_dict()
        assert got.keys() == expected.keys(), name
        assert all(torch.equal(got[k], expected[k]) for k in got), name


class NotATensor:
    pass


def bad(state: dict, **changes) -> dict:
    state = dict(state)
    for k, v in changes.items():
        k = k.replace("__", ".")
        if v is None:
            del state[k]
        else:
            state[k] = v
    return state


@pytest.mark.parametrize("change, message", [
    ({"g_s__4__weight": None}, "missing key g_s.4.weight"),
    ({"entropy_bottleneck__quantiles": None}, "missing key entropy_bottleneck.quantiles"),
    ({"h_s__2__weight": torch.zeros(M, M, 5, 5)}, r"h_s.2.weight has shape \(12, 12, 5, 5\); "
     r"a mbt2018-mean with N=8, M=12 needs \(12, 18, 5, 5\)"),
    ({"entropy_bottleneck__matrices__1": torch.zeros(N, 4, 3)}, "entropy_bottleneck.matrices.1"),
    ({"context_prediction__weight": torch.zeros(1)}, "unknown key context_prediction.weight"),
    ({"g_a__1__beta_reparam__pedestal": torch.tensor([1e-3])}, "g_a.1.beta_reparam"),
    ({"gaussian_conditional__scale_table": torch.linspace(0.1, 100, 64)},
     "gaussian_conditional.scale_table"),
    ({"gaussian_conditional__lower_bound_scale__bound": torch.tensor([0.2])},
     "lower_bound_scale.bound"),
    ({"entropy_bottleneck__target": torch.tensor([-5.0, 0.0, 5.0])}, "tail mass"),
])
def test_bad_state_dicts_name_the_key(change, message):
    state = bad(compressai_state("mbt2018-mean"), **change)
    with pytest.raises(ValueError, match=message):
        convert_state_dict(state, "mbt2018-mean")


def test_wrong_or_unknown_architecture():
    state = compressai_state("mbt2018-mean")
    with pytest.raises(ValueError, match="unknown architecture 'cheng2020'"):
        convert_state_dict(state, "cheng2020")
    with pytest.raises(ValueError, match="missing key g_a.0.conv1.weight"):
        convert_state_dict(state, "cheng2020-anchor")
    with pytest.raises(ValueError, match="missing key context_prediction.weight"):
        convert_state_dict(state, "mbt2018")
    with pytest.raises(ValueError, match="h_s.0.weight has shape"):
        convert_state_dict(state, "bmshj2018-hyperprior")
    with pytest.raises(ValueError, match="unknown key h_a.0.weight"):
        convert_state_dict(state, "bmshj2018-factorized")


@pytest.mark.parametrize("content, message", [
    ({"state_dict": {"g_a.0.weight": NotATensor()}}, r"not a plain state_dict: .* refuses it "
     r"\(it holds a test_compressai_import.NotATensor object\)"),
    ([torch.zeros(1)], "holds a list, not a state_dict"),
    ({"g_a.0.weight": 3}, "key 'g_a.0.weight' holds a int"),
])
def test_bad_checkpoint_files(content, message, tmp_path):
    path = tmp_path / "bad.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match=message):
        read_checkpoint(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's, for the plain pickle
def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "text.pth").write_text("hello")
    with open(tmp_path / "pickle.pth", "wb") as f:
        pickle.dump({"a": 1}, f)
    (tmp_path / "empty.pth").write_bytes(b"")
    for name in ("text.pth", "empty.pth"):
        with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
            read_checkpoint(tmp_path / name)
    with pytest.raises(ValueError, match="not a plain state_dict: .* refuses it"):
        read_checkpoint(tmp_path / "pickle.pth")  # pickle's own format, not torch.save's
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "absent.pth")


# --- the command ---------------------------------------------------------------------------

def test_command(tmp_path, capsys):
    ckpt, out = tmp_path / "ckpt.pth.tar", tmp_path / "w.safetensors"
    torch.save(training_checkpoint(compressai_state("bmshj2018-hyperprior")), ckpt)
    assert main(["import-compressai", str(ckpt), str(out), "--arch", "bmshj2018-hyperprior",
                 "--quality", "5"]) == 0
    printed = capsys.readouterr().out
    assert "N=8 M=12" in printed and "lambda 0.025 (CompressAI's zoo lambda" in printed
    model = load_weights(out)
    assert model.ARCH == "scale_hyperprior" and model.info.lam == 0.025
    assert main(["import-compressai", str(ckpt), str(out), "--arch", "mbt2018-mean"]) == 1
    assert capsys.readouterr().err.startswith("error: h_s.0.weight has shape")
    assert main(["import-compressai", str(ckpt), str(out), "--arch", "bmshj2018-hyperprior",
                 "--lam", "0.5"]) == 0
    assert load_weights(out).info.lam == 0.5
    assert "lambda unknown" not in capsys.readouterr().out
    assert main(["import-compressai", str(tmp_path / "absent"), str(out), "--arch",
                 "mbt2018-mean"]) == 1
    assert main(["import-compressai", str(ckpt), str(out), "--arch", "bmshj2018-hyperprior",
                 "--quality", "0.001"]) == 1
    assert "quality" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["import-compressai", str(ckpt), str(out), "--arch", "cheng2020"])
