"""One wavefront step of the joint autoregressive model (gather, context layer, entropy-parameter
layers, table indexes): the Triton kernel against `wavefront_step_reference`, bit for bit
(compiled on a GPU, under the interpreter on the CPU: the `device` fixture), and the reference
against the model's own layers (`IntegerLayer`) and index rule (bucketize of the real scales).
"""

from pathlib import Path

import pytest
import torch

from engine.entropy.gaussian import SCALES
from engine.models import ContextConfig, JointAutoregressive
from engine.models.integer_context import CONTEXT_PAD, CONTEXT_TAPS, wavefront_positions
from engine.models.integer_hyper import FRAC_BITS
from nicengine_kernels import dispatch
from nicengine_kernels import int_conv_gemm as gemm_module
from nicengine_kernels.dispatch import int_conv, wavefront_step
from nicengine_kernels.int_conv_reference import FIXED, LRELU_INT8, PLAIN_INT8
from nicengine_kernels.wavefront_step_reference import (
    IntLayer,
    WavefrontLayers,
    wavefront_step_reference,
)
from tests.conftest import compile_for_gpus, smooth_image

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = torch.floor(torch.as_tensor(SCALES[:-1]) * 2**FRAC_BITS).long()
# (B, M, h, w, t): a 1x1 latent (every tap in the border); one position; several; the last
# step of a latent (an edge); 20 positions, over one program's 16.
STEPS = [(1, 8, 1, 1, 0), (2, 12, 3, 7, 2), (2, 8, 6, 9, 10), (1, 12, 4, 5, 13),
         (1, 8, 24, 60, 69)]
# Compiles the kernel for sm_80 and sm_90 (mbt2018's four layers, 63 thresholds); says per
# target whether the PTX multiplies int8 on the tensor cores and synchronises its threads.
COMPILE_SCRIPT = """
import re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nicengine_kernels.wavefront_step import BLOCK_K, BLOCK_N, BLOCK_P, wavefront_step_kernel
sig = {"taps_ptr": "*i8", "rows_ptr": "*i64", "cols_ptr": "*i64", "acc_ptr": "*i32",
       "w_ptr": "*i8", "vec_ptr": "*i32", "table_ptr": "*i32", "thr_ptr": "*i64",
       "idx_ptr": "*i32", "scales_ptr": "*i64", "means_ptr": "*i64", "scratch_ptr": "*i8",
       **dict.fromkeys(["P", "M", "TH", "TW", "H", "W", "NV", "NT", "CMAX"], "i32"),
       **dict.fromkeys(["LAYERS", "STEPS", "BLOCK_P", "BLOCK_N", "BLOCK_K"], "constexpr")}
blocks = {"LAYERS": 4, "STEPS": 6, "BLOCK_P": BLOCK_P, "BLOCK_N": BLOCK_N, "BLOCK_K": BLOCK_K}
for arch in (80, 90):
    ptx = triton.compile(ASTSource(wavefront_step_kernel, sig, constexprs=blocks),
                         target=GPUTarget("cuda", arch, 32)).asm["ptx"]
    print(bool(re.search(r"mma[.\\w]*\\.s8", ptx)) and "bar.sync" in ptx)
"""


def _layer(co: int, c: int, shift: int, mode: int, g: torch.Generator) -> IntLayer:
    weight = torch.randint(-128, 128, (co, c, 1, 1), generator=g, dtype=torch.int8)
    bias = torch.randint(-2**16, 2**16, (co,), generator=g, dtype=torch.int32)
    mult = torch.randint(2**14, 2**15, (co,), generator=g, dtype=torch.int32)
    shifts = torch.randint(shift - 1, shift + 2, (co,), generator=g, dtype=torch.int32)
    return IntLayer(weight, bias, mult, shifts, mode)


def _random_step(b: int, m: int, h: int, w: int, seed: int = 0):
    """taps (random, border included), params_acc and layers shaped like mbt2018's (C1 = 10M/3,
    C2 = 8M/3), shifts that clamp some int8 outputs and spread the scales over the tables."""
    g = torch.Generator().manual_seed(seed)
    pad = 2 * CONTEXT_PAD
    taps = torch.randint(-128, 128, (b, m, h + pad, w + pad), generator=g, dtype=torch.int8)
    c1, c2 = m * 10 // 3, m * 8 // 3
    params_acc = torch.randint(-2**20, 2**20, (b, c1, h, w), generator=g, dtype=torch.int32)
    layers = WavefrontLayers(
        _layer(2 * m, 12 * m, 24, PLAIN_INT8, g),
        (_layer(c1, 2 * m, 23, LRELU_INT8, g), _layer(c2, c1, 22, LRELU_INT8, g),
         _layer(2 * m, c2, 16, FIXED, g)),
        THRESHOLDS)
    return taps, params_acc, layers


def _to(layers: WavefrontLayers, device: torch.device) -> WavefrontLayers:
    def move(layer: IntLayer) -> IntLayer:
        return IntLayer(*(t.to(device) for t in layer[:4]), layer.mode)

    return WavefrontLayers(move(layers.context), tuple(map(move, layers.params)),
                           layers.thresholds.to(device))


@pytest.mark.usefixtures("kernels_on")
@pytest.mark.parametrize("b, m, h, w, t", STEPS)
def test_triton_matches_reference(b, m, h, w, t, device, poisoned):
    taps, params_acc, layers = _random_step(b, m, h, w, seed=t)
    rows, cols = wavefront_positions(h, w, t)
    expected = wavefront_step_reference(taps, rows, cols, params_acc, layers)
    got = wavefront_step(taps.to(device), rows.to(device), cols.to(device),
                         params_acc.to(device), _to(layers, device))
    for e, o, dtype in zip(expected, got, (torch.int32, torch.int64, torch.int64), strict=True):
        assert o.dtype == dtype and o.shape == (b, m, rows.numel())
        assert torch.equal(o.cpu(), e)
    indexes, scales, means = expected
    assert indexes.unique().numel() > 3 and means.abs().max() > 127  # a step worth comparing


def test_triton_compiles_for_gpus(tmp_path):
    """The kernel compiles to int8 tensor-core code for sm_80 and sm_90 (no GPU needed)."""
    assert compile_for_gpus(COMPILE_SCRIPT, tmp_path) == ["True", "True"]


@pytest.mark.parametrize("b, m, h, w, t", [*STEPS, (3, 24, 9, 13, 0), (2, 16, 40, 64, 1000)])
@pytest.mark.parametrize("path", ["C++ step", "reference over the GEMMs"])
def test_cpu_paths_are_the_reference(b, m, h, w, t, path, monkeypatch):
    """The CPU paths of dispatch (the C++ step where the int8 GEMM runs, else the reference over
    the exact GEMMs) are the int64 reference; t = 1000: every position at once, as the encoder's
    one batched pass (`Wavefront.decoded_params`)."""
    if path == "C++ step" and not gemm_module.INT8_GEMM:
        pytest.skip("the C++ step runs on x86 CPUs with AVX2")
    monkeypatch.setattr(gemm_module, "INT8_GEMM", path == "C++ step")
    monkeypatch.setattr(dispatch, "wavefront_step_reference", _spy(calls := []))
    taps, params_acc, layers = _random_step(b, m, h, w, seed=t)
    if t == 1000:
        rows, cols = (g.flatten() for g in torch.meshgrid(torch.arange(h), torch.arange(w),
                                                          indexing="ij"))
    else:
        rows, cols = wavefront_positions(h, w, t)
    expected = wavefront_step_reference(taps, rows, cols, params_acc, layers)
    for _ in range(2):  # the second call with the C++ step's prepared layers
        got = wavefront_step(taps, rows, cols, params_acc, layers)
        for e, o in zip(expected, got, strict=True):
            assert o.dtype == e.dtype and torch.equal(o, e)
    assert len(calls) == (0 if path == "C++ step" else 2)


def _spy(calls):
    def reference(*args, **kwargs):
        calls.append(1)
        return wavefront_step_reference(*args, **kwargs)
    return reference


def test_layers_are_checked():
    _, _, layers = _random_step(1, 8, 2, 2)
    context, (first, second, last) = layers.context, layers.params
    with pytest.raises(ValueError, match="wavefront step"):
        WavefrontLayers(context, (first, second, last._replace(mode=LRELU_INT8)), THRESHOLDS)
    with pytest.raises(ValueError, match="wavefront step"):
        WavefrontLayers(context, (first, second._replace(mode=FIXED), last), THRESHOLDS)


# --- against the model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net():
    """The integer context model of a small random mbt2018 (as tests/test_context_model.py)."""
    torch.manual_seed(0)
    m = JointAutoregressive(ContextConfig(N=16, M=24)).eval().requires_grad_(False)
    return m.calibrate(torch.stack([smooth_image(128, 192, s) for s in range(2)]))


def _model_path(net, taps, rows, cols, params):
    """(indexes, scales, means) from the model's integer layers, one by one, and its index rule:
    bucketize of the real scales against the float64 scale bounds."""
    b, m, n = taps.shape[0], taps.shape[1], rows.numel()
    gathered = torch.stack([taps[:, :, rows + dy, cols + dx] for dy, dx in CONTEXT_TAPS], 2)
    ctx = net.context(gathered.reshape(b, -1, 1, n))
    first, *others = net.params
    acc = int_conv(params[:, :, rows, cols].unsqueeze(2), first.weight[:, : 2 * m].contiguous())
    v = first.requantize(acc + int_conv(ctx, first.weight[:, 2 * m :].contiguous()))
    for layer in others:
        v = layer(v)
    scales, means = v[:, :m, 0], v[:, m:, 0]
    real = scales.double() * 2.0**-FRAC_BITS
    return torch.bucketize(real, net.scale_bounds("cpu"), right=False).int(), scales, means


@pytest.mark.parametrize("kernels", ["reference", "triton"])
def test_wavefront_step_is_the_models(net, kernels, request):
    """Wavefront.step (the dispatch: the reference on the CPU, or the kernel) on a decoded-like
    state equals the model's layers, for a first, a middle and the last step."""
    device = torch.device("cpu")
    if kernels == "triton":
        request.getfixturevalue("kernels_on")
        device = request.getfixturevalue("device")
    g = torch.Generator().manual_seed(3)
    params = torch.randint(-128, 128, (2, 48, 5, 7), generator=g, dtype=torch.int8)
    y_fixed = torch.randint(-12 * 256, 12 * 256, (2, 24, 5, 7), generator=g)
    taps = torch.zeros(2, 24, 9, 11, dtype=torch.int8)
    taps[:, :, 2:-2, 2:-2] = net.to_int8(y_fixed)
    wave = net.wavefront(params.to(device))
    wave.taps.copy_(taps)
    for t in (0, wave.steps // 2, wave.steps - 1):
        rows, cols = wavefront_positions(5, 7, t)
        expected = _model_path(net, taps, rows, cols, params)
        for e, o in zip(expected, wave.step(t), strict=True):
            assert torch.equal(o.cpu(), e), t
