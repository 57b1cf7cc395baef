"""The codec with every kernel on (NIC_KERNELS=triton: compiled on a GPU, under the Triton
interpreter on the CPU) writes the same bytes as with the references, and decodes to the same
image within float32 tolerance."""


import torch

from engine import Codec
from tests.conftest import smooth_image


def test_kernels_give_the_same_bitstream(tiny_model, monkeypatch, device, kernels_on):
    from nicengine_kernels import utils  # imports triton, which kernels_on made sure of

    codec = Codec(weights=tiny_model, device=device)
    x = smooth_image(70, 100)
    monkeypatch.setenv("NIC_KERNELS", "reference")
    data = codec.compress(x)
    expected = codec.decompress(data)

    launched = []
    empty = utils.empty
    monkeypatch.setattr(utils, "empty", lambda *a: launched.append(a) or empty(*a))
    monkeypatch.setenv("NIC_KERNELS", "triton")
    # Output allocations: 3 GDN (g_a), 2 float64 LeakyReLU subpel (h_s), 3 of quantize; then
    # h_s again, 3 IGDN subpel and the last subpel (g_s).
    assert codec.compress(x) == data
    out = codec.decompress(data)
    assert len(launched) == 3 + 2 + 3 + 2 + 3 + 1
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
