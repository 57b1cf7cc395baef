"""The codec codes any model kind through `CodingModel` alone: the factorized prior (Balle,
Laparra, Simoncelli, ICLR 2017; a kind for imported CompressAI models, small here) goes through
the same codec path as the shipped hyperprior, and a three-pass kind defined in this test checks
that later passes may depend on the symbols of earlier ones."""

from __future__ import annotations

import pytest
import torch

from engine import Codec, CodecError, format
from engine.models import Encoded
from engine.models.factorized_prior import FactorizedPrior
from engine.models.hyperprior import ModelConfig
from tests.conftest import check_bfloat16_round_trip, smooth_image


class ThreePasses(FactorizedPrior):
    """The same latents in three passes whose tables depend on what came before: pass 0 codes
    channel 0; pass k codes channel k with table (k + symbol of channel 0 at that position) mod
    the channel count. A decoder that fed a pass the wrong symbols would desynchronise."""

    ARCH = "test_three_passes"
    KIND_ID = 251
    WHOLE_PASSES = 1

    def __init__(self) -> None:
        super().__init__(ModelConfig(N=8, M=3))

    def pass_shapes(self, height, width):
        (c, h, w), = super().pass_shapes(height, width)
        return [(1, h, w)] * c

    def _table(self, k: int, first: torch.Tensor) -> torch.Tensor:
        return ((k + first.long()) % self.config.M).to(torch.int32)

    def encode_latents(self, latents, quality):
        (y,) = latents
        symbols = self.entropy_y.symbols(y).flatten(2)  # (B, C, h*w)
        first = symbols[:, 0]
        return Encoded([symbols[:, k] for k in range(self.config.M)],
                       [self._table(k, first) if k else torch.zeros_like(first)
                        for k in range(self.config.M)],
                       torch.full((y.shape[0],), 8.0 * symbols[0].numel()))

    def decode(self, batch, height, width, quality, device, integer=False, rectify=False):
        shapes = self.pass_shapes(height, width)
        n = shapes[0][1] * shapes[0][2]
        first = yield torch.zeros(batch, n, dtype=torch.int32, device=device)
        rows = [first]
        for k in range(1, len(shapes)):
            rows.append((yield self._table(k, first)))
        symbols = torch.stack(rows, 1).to(device).view(batch, self.config.M, *shapes[0][1:])
        return self.synthesize(self.entropy_y.dequantize(symbols))


@pytest.fixture(scope="module", params=["factorized prior", "three passes"])
def model(request) -> FactorizedPrior:
    torch.manual_seed(0)
    m = (FactorizedPrior(ModelConfig(N=8, M=8)) if request.param == "factorized prior"
         else ThreePasses())
    m.eval().requires_grad_(False)
    with torch.no_grad():
        m.g_a[-1].weight.mul_(30)  # latents with a few symbols per value, not all zero
    return m


def test_another_kind_round_trips_through_the_codec(model):
    codec = Codec(weights=model, precision="float32")
    images = [smooth_image(40, 70), smooth_image(40, 70, 1), smooth_image(65, 30)]
    streams = codec.compress_batch(images)
    assert [format.unpack(s)[0].kind_id for s in streams] == [model.KIND_ID] * 3
    for x, data, x_hat in zip(images, streams, codec.decompress_batch(streams), strict=True):
        latents = model.analyze(model.pad(x[None]))
        expected = model.reconstruct(model.encode_latents(latents, 0), *x.shape[1:], 0)
        torch.testing.assert_close(x_hat, expected[0, :, : x.shape[1], : x.shape[2]], rtol=0,
                                   atol=1e-4)
        assert torch.equal(codec.decompress(data), codec.decompress(data))


def test_streams_split_and_refuse_other_kinds(model, tiny_model):
    many = Codec(weights=model, stream_bytes=64, precision="float32")
    x = torch.rand(3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    data = many.compress(x)
    assert len(format.unpack(data)[0].stream_lengths) > 1
    assert torch.equal(many.decompress(data), Codec(weights=model).decompress(data))
    with pytest.raises(CodecError, match=f"made by model kind {model.KIND_ID}"):
        Codec(weights=tiny_model).decompress(data)


def test_bfloat16_round_trip(model):
    check_bfloat16_round_trip(model, smooth_image(64, 96))
