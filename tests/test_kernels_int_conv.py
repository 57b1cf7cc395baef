"""Exact integer convolution (the integer hyper-decoder's): every backend equals
`int_conv_reference` bit for bit (torch.equal). The Triton kernel runs compiled on a GPU and under
the interpreter on the CPU (the `device` fixture); the CPU GEMM paths (the int8 GEMM and the
float32 one, the `product` fixture) must not depend on the thread count, the batch or the ISA.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nicengine_kernels import _int_gemm, dispatch
from nicengine_kernels import int_conv_gemm as gemm_module
from nicengine_kernels.dispatch import int_conv
from nicengine_kernels.int_conv_gemm import CHUNK_K, int_conv_gemm
from nicengine_kernels.int_conv_reference import (
    INT8_MAX_PRODUCT,
    MAX_TERMS,
    int_conv_reference,
    max_channels,
)
from tests.conftest import compile_for_gpus

ROOT = Path(__file__).resolve().parents[1]

# (B, C, Co, H, W, k): 1x1 images; odd sizes; C and Co not multiples of 16; k = 1, 3, 5 (k = 5
# wider than a 5x3 image); C*k*k over one GEMM chunk (1170, 1125 > CHUNK_K = 1024).
SHAPES = [(1, 3, 16, 1, 1, 3), (3, 5, 7, 7, 9, 3), (1, 20, 33, 5, 3, 5), (3, 17, 24, 6, 11, 1),
          (1, 130, 18, 4, 5, 3), (2, 45, 20, 3, 3, 5), (3, 7, 5, 1, 1, 1)]
# Images (3): all -128, -128 and 127 alternating along C, all 127; kernels (4): all -128, all
# -127, -128 and 127 alternating along C*k*k, -127 and 127 alternating along C.
X_FILLS = [(-128, -128), (-128, 127), (127, 127)]
W_FILLS = [(-128, -128), (-127, -127), (-128, 127), (-127, 127)]
ISA_SCRIPT = """
import hashlib, sys, torch
from nicengine_kernels.int_conv_gemm import int_conv_gemm
x, weight = torch.load(sys.argv[1])
print(hashlib.sha256(int_conv_gemm(x, weight).numpy().tobytes()).hexdigest())
"""
# Compiles the kernel for sm_80 (k = 1, 16 x 16 tiles) and sm_90 (k = 3, the largest tiles); says
# per target whether the PTX multiplies int8 on the tensor cores (mma or wgmma ... .s8).
COMPILE_SCRIPT = """
import re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nicengine_kernels.int_conv import BLOCK_K, MAX_BLOCK, int_conv_kernel
sig = {"x_ptr": "*i8", "w_ptr": "*i8", "out_ptr": "*i32", "C": "i32", "H": "i32", "W": "i32",
       "CO": "i32", "KSIZE": "constexpr", "BLOCK_P": "constexpr", "BLOCK_CO": "constexpr",
       "BLOCK_K": "constexpr"}
for arch, k, block in [(80, 1, 16), (90, 3, MAX_BLOCK)]:
    blocks = {"KSIZE": k, "BLOCK_P": block, "BLOCK_CO": block, "BLOCK_K": BLOCK_K}
    compiled = triton.compile(ASTSource(int_conv_kernel, sig, constexprs=blocks),
                              target=GPUTarget("cuda", arch, 32))
    print(bool(re.search(r"mma[.\\w]*\\.s8", compiled.asm["ptx"])))
"""
LOW_ISA = {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
           "NIC_INT_GEMM_AVX2": "1"}


@pytest.fixture(params=["int8", "float32"])
def product(request, monkeypatch):
    """Which exact product int_conv_gemm runs."""
    monkeypatch.setattr(gemm_module, "INT8_GEMM", request.param == "int8")
    return request.param


def _random(b, c, co, h, w, k, seed=0, low=-128, high=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(low, high, (b, c, h, w), generator=g, dtype=torch.int8)
    weight = torch.randint(low, high, (co, c, k, k), generator=g, dtype=torch.int8)
    return x, weight


def _same_sign():
    """C*k*k = 3600 products of one sign, each over 96^2: every sum is over 2^24."""
    return _random(1, 400, 24, 7, 9, 3, seed=7, low=-128, high=-96)


def _alternating(fill, n):
    """n int8 values: fill[0], fill[1], fill[0], ..."""
    return torch.tensor(fill, dtype=torch.int8).repeat((n + 1) // 2)[:n]


def _worst_case():
    """The largest sums int32 allows: the most channels for k = 3, on 3x3 images of X_FILLS
    against the kernels of W_FILLS."""
    c, k = max_channels(3), 3
    x = torch.stack([_alternating(f, c).view(c, 1, 1).expand(c, 3, 3) for f in X_FILLS])
    along_k = [_alternating(f, c * k * k) for f in W_FILLS[:3]]
    along_c = _alternating(W_FILLS[3], c).repeat_interleave(k * k)
    weight = torch.stack([*along_k, along_c])
    return x.contiguous(), weight.view(-1, c, k, k)


@pytest.mark.parametrize("shape", SHAPES)
def test_reference_is_the_convolution(shape):
    """The reference against float64 F.conv2d, exact here (integer sums far below 2^53)."""
    x, weight = _random(*shape)
    expected = F.conv2d(x.double(), weight.double(), padding=shape[-1] // 2)
    assert torch.equal(int_conv_reference(x, weight), expected.to(torch.int32))


@pytest.mark.parametrize("shape", SHAPES)
def test_gemm_matches_reference(shape, product):
    x, weight = _random(*shape)
    out = int_conv_gemm(x, weight)
    assert out.dtype == torch.int32 and torch.equal(out, int_conv_reference(x, weight))


@pytest.mark.parametrize("shape", [(1, 20, 33, 5, 3, 5), (3, 5, 7, 7, 9, 3),
                                   (3, 17, 24, 6, 11, 1)])
def test_gemm_bands_and_chunks(shape, product, monkeypatch):
    """One output row per band; float32 chunks of 16 products: parts of one channel (k = 5),
    one channel (k = 3), 16 channels (k = 1)."""
    monkeypatch.setattr(gemm_module, "COLS_ELEMENTS", 1)
    monkeypatch.setattr(gemm_module, "CHUNK_K", 16)
    x, weight = _random(*shape, seed=1)
    assert torch.equal(int_conv_gemm(x, weight), int_conv_reference(x, weight))


def test_worst_case_magnitudes(product):
    x, weight = _worst_case()
    expected = int_conv_reference(x, weight)
    terms = x.shape[1] * 9
    centre = expected[:, :, 1, 1]
    assert centre[0, 0] == terms * INT8_MAX_PRODUCT > 2**31 - 2**17  # 2147401728
    assert centre[0, 1] == terms * 128 * 127 and centre[2, 0] == -terms * 128 * 127
    assert torch.equal(int_conv_gemm(x, weight), expected)


def test_unchunked_float32_is_not_exact(monkeypatch):
    """What CHUNK_K prevents: one float32 GEMM over the same-sign products rounds; so the data
    of the ISA test below would catch a missing chunking."""
    x, weight = _same_sign()
    expected = int_conv_reference(x, weight)
    assert int(expected.min()) > 2**24
    monkeypatch.setattr(gemm_module, "INT8_GEMM", False)
    monkeypatch.setattr(gemm_module, "CHUNK_K", 10**9)
    assert not torch.equal(int_conv_gemm(x, weight), expected)


def test_gemm_independent_of_threads_and_batch(product):
    x, weight = _random(3, 150, 40, 13, 17, 3, seed=2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = int_conv_gemm(x, weight)
        torch.set_num_threads(2)
        two = int_conv_gemm(x, weight)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)
    for i in range(3):
        assert torch.equal(int_conv_gemm(x[i : i + 1], weight), one[i : i + 1])


def test_gemm_independent_of_isa(tmp_path):
    """The same bytes with ATen's and MKL's lowest ISA (default, SSE4.2) and the int8 GEMM held
    to AVX2 as with this machine's, and the reference's."""
    x, weight = _same_sign()
    torch.save((x, weight), tmp_path / "data.pt")
    expected = hashlib.sha256(int_conv_reference(x, weight).numpy().tobytes()).hexdigest()
    env = {k: v for k, v in os.environ.items() if k not in LOW_ISA}
    command = [sys.executable, "-c", ISA_SCRIPT, str(tmp_path / "data.pt")]
    hashes = [subprocess.run(command, cwd=ROOT, env=e, check=True,
                             capture_output=True, text=True, timeout=120).stdout.strip()
              for e in (env, {**env, **LOW_ISA})]
    assert hashes == [expected, expected]


def test_gemm_keeps_the_precision_switch(monkeypatch):
    monkeypatch.setattr(gemm_module, "INT8_GEMM", False)
    x, weight = _random(1, 4, 16, 5, 5, 3)
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "bf16"
        assert torch.equal(int_conv_gemm(x, weight), int_conv_reference(x, weight))
        assert matmul.fp32_precision == "bf16"
    finally:
        matmul.fp32_precision = before


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (5, 17, 3), (9, 33, 260), (64, 100, 1153),
                                     (300, 20, 600)])
def test_int8_gemm_simd_and_portable_match_int64(m, n, k):
    """The SIMD tile (where the CPU has one) and the portable one, on sizes off the tiles (4 x 16)
    and odd K, over several passes of K (1153) and of rows (300), with the extremes of int8, into
    rows of C wider than N."""
    a, b = _random(1, 1, 1, m, k, 1, seed=3)[0][0, 0], _random(1, 1, 1, k, n, 1, seed=4)[0][0, 0]
    a[0], b[:, 0] = -128, -128
    packed = gemm_module.packed_weight(a)
    expected = a.long() @ b.long()
    for portable in (False, True):
        c = torch.full((m, n + 3), -1, dtype=torch.int32)
        _int_gemm.gemm(packed.data_ptr(), b.data_ptr(), c.data_ptr(), m, n, k, n + 3, 2,
                       portable)
        assert torch.equal(c[:, :n].long(), expected) and (c[:, n:] == -1).all()


def test_int8_gemm_is_the_default_on_cpus_with_avx2():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if "flags" not in flags:
        pytest.skip("no /proc/cpuinfo flags to compare with")
    has_avx2 = " avx2" in flags
    assert has_avx2 == gemm_module.INT8_GEMM


def test_dispatch_routes(monkeypatch):
    """CPU tensors: the GEMM path by default, the reference in reference mode."""
    monkeypatch.setattr(dispatch, "int_conv_gemm", lambda x, w: "gemm")
    monkeypatch.setattr(dispatch, "int_conv_reference", lambda x, w: "reference")
    x, weight = _random(1, 3, 4, 2, 2, 3)
    monkeypatch.setenv("NIC_KERNELS", "auto")
    assert int_conv(x, weight) == "gemm"
    monkeypatch.setenv("NIC_KERNELS", "reference")
    assert int_conv(x, weight) == "reference"


def _bad_arguments():
    x, weight = _random(1, 4, 8, 3, 3, 3)
    return {
        "float x": (x.float(), weight),
        "int16 weight": (x, weight.short()),
        "even k": (x, weight[:, :, :2, :2]),
        "non-square kernel": (x, weight[:, :, :, :1]),
        "channels differ": (x[:, :3], weight),
        "3-D x": (x[0], weight),
        "empty x": (x[:0], weight),
        "over the bound": (torch.zeros(1, max_channels(3) + 1, 1, 1, dtype=torch.int8),
                           torch.zeros(1, max_channels(3) + 1, 3, 3, dtype=torch.int8)),
    }


def test_bound():
    """max_channels(k) is the largest C with C*k*k*2^14 <= 2^31 - 1."""
    for k in (1, 3, 5):
        assert max_channels(k) * k * k <= MAX_TERMS < (max_channels(k) + 1) * k * k
    assert MAX_TERMS * INT8_MAX_PRODUCT <= 2**31 - 1 < (MAX_TERMS + 1) * INT8_MAX_PRODUCT
    assert CHUNK_K * INT8_MAX_PRODUCT <= 2**24


@pytest.mark.parametrize("fn", [int_conv_reference, int_conv_gemm, int_conv])
@pytest.mark.parametrize("case", list(_bad_arguments()))
def test_bad_arguments_raise(fn, case):
    with pytest.raises(ValueError, match="int_conv"):
        fn(*_bad_arguments()[case])


def test_gemm_rejects_other_devices():
    x = torch.zeros(1, 2, 3, 3, dtype=torch.int8, device="meta")
    with pytest.raises(ValueError, match="CPU tensors"):
        int_conv_gemm(x, torch.zeros(4, 2, 3, 3, dtype=torch.int8, device="meta"))


# --- Triton ------------------------------------------------------------------------------------

@pytest.mark.usefixtures("kernels_on")
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_matches_reference(shape, device, poisoned):
    x, weight = (t.to(device) for t in _random(*shape))
    out = int_conv(x, weight)
    assert [t.data_ptr() for t in poisoned] == [out.data_ptr()]
    assert out.dtype == torch.int32 and torch.equal(out, int_conv_reference(x, weight))


@pytest.mark.usefixtures("kernels_on")
def test_triton_worst_case_magnitudes(device, poisoned, monkeypatch):
    from nicengine_kernels import int_conv as triton_module

    if device.type == "cpu":  # the interpreter's time goes by loop iteration, not by block size
        monkeypatch.setattr(triton_module, "BLOCK_K", 4096)
    x, weight = (t.to(device) for t in _worst_case())
    assert torch.equal(int_conv(x, weight), int_conv_reference(x, weight))


@pytest.mark.usefixtures("kernels_on")
def test_triton_rejects_bad_arguments(device):
    x, weight = _bad_arguments()["over the bound"]
    with pytest.raises(ValueError, match="int_conv"):
        int_conv(x.to(device), weight.to(device))


def test_triton_compiles_for_gpus(tmp_path):
    """The kernel compiles to int8 tensor-core code for sm_80 and sm_90 (no GPU needed)."""
    assert compile_for_gpus(COMPILE_SCRIPT, tmp_path) == ["True", "True"]


def test_poison_catches_skipped_elements(device, launch_one_short):
    """A launch one block short along each axis leaves the poison behind."""
    from nicengine_kernels import int_conv as triton_module

    launch_one_short(triton_module)
    x, weight = (t.to(device) for t in _random(2, 3, 80, 9, 10, 3))
    out = int_conv(x, weight)
    assert (out == torch.iinfo(torch.int32).min).any()
    assert not torch.equal(out, int_conv_reference(x, weight))
