"""The channel-conditional model with gain units (engine/models/channel.py): one network for
every rate, fractional qualities, rate control, and its start from a hyperprior."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from engine import Codec, Refine, UsageError, format
from engine.images import to_uint8
from engine.models import ChannelConditional, ChannelConfig
from engine.models.channel import MSE_LAMBDAS
from engine.train import TrainConfig, Trainer
from engine.zoo import save_weights
from tests.conftest import check_bfloat16_round_trip, smooth_image

CONFIG = ChannelConfig(N=16, M=24, slices=3, hidden=16)


def random_model(checkerboard: bool) -> ChannelConditional:
    """Random corrections (not the zeros they start from), latents of a few symbols each."""
    torch.manual_seed(0)
    config = ChannelConfig(**{**CONFIG.to_dict(), "checkerboard": checkerboard})
    m = ChannelConditional(config).eval().requires_grad_(False)
    for p in [*m.slice_params.parameters(), *m.slice_lrp.parameters(),
              *m.slice_context.parameters()]:
        p.normal_(0, 0.05)
    m.g_a[-1].weight.mul_(20)
    return m


@pytest.fixture(scope="module", params=[False, True], ids=["slices", "checkerboard"])
def model(request) -> ChannelConditional:
    """Without and with the checkerboard inside the slices."""
    return random_model(request.param)


def test_training_pass_shapes_and_lambdas(model):
    x = torch.rand(2, 3, 64, 128)
    out = model(x, quality=torch.tensor([1, 6]))
    y_lik, z_lik = out["likelihoods"]
    assert out["x_hat"].shape == x.shape
    assert y_lik.shape == (2, 24, 4, 8) and z_lik.shape == (2, 16, 1, 2)
    assert out["lambdas"].tolist() == pytest.approx([MSE_LAMBDAS[0], MSE_LAMBDAS[-1]])
    if model.config.checkerboard:  # an 8x12 map's 48 anchors first, then the other 48
        assert model.pass_shapes(65, 130) == [(16, 2, 3)] + [(8, 48, 1), (8, 48, 1)] * 3
    else:
        assert model.pass_shapes(65, 130) == [(16, 2, 3), (8, 8, 12), (8, 8, 12), (8, 8, 12)]


def test_checkerboard_non_anchors_depend_on_their_slices_anchors():
    """The second pass of a slice sees the decoded anchors of the same slice: change one
    anchor's value and the parameters of its four neighbours (non-anchors) move."""
    model = random_model(checkerboard=True)
    hyper = torch.randn(1, 48, 4, 4, dtype=torch.float64)
    y_hat = torch.zeros(1, 8, 4, 4, dtype=torch.float64)
    net = model._exact("slice_params", hyper.device)[0]
    first = model._slice_params(0, hyper, [], net, model._context(0, y_hat, 1))
    y_hat[0, 0, 2, 2] = 3.0  # an anchor: row + column even
    second = model._slice_params(0, hyper, [], net, model._context(0, y_hat, 1))
    moved = (first[1] - second[1]).abs().sum((0, 1)) > 0
    assert moved[1, 2] and moved[2, 1] and moved[3, 2] and moved[2, 3]


def test_gains_interpolate_between_levels(model):
    q = torch.tensor([2.0, 2.5, 3.0])
    gain = model.gains(q, torch.float64)[0][:, :, 0, 0]
    torch.testing.assert_close(gain[1], (gain[0] * gain[2]).sqrt())
    assert model.training_lambda(2.5) == pytest.approx(math.sqrt(MSE_LAMBDAS[1] * MSE_LAMBDAS[2]))
    with pytest.raises(ValueError, match="outside"):
        model.training_lambda(7)


def test_it_starts_as_the_hyperprior_it_is_initialised_from(tiny_model):
    """Zero corrections and unit gains: the same reconstruction as the mean-scale hyperprior
    whose weights it copies, through the codec."""
    cc = ChannelConditional(ChannelConfig(N=16, M=24, slices=4, hidden=8))
    state = cc.state_dict()
    state.update({k: v for k, v in tiny_model.state_dict().items() if k in state})
    cc.load_state_dict(state)
    for gains in (cc.log_gain, cc.log_inverse_gain):
        gains.data.zero_()
    cc.eval().requires_grad_(False)
    x = smooth_image(70, 90)
    ours = Codec(weights=cc, quality=3, precision="float32").compress(x)
    theirs = Codec(weights=tiny_model, precision="float32").compress(x)
    decoded = [Codec(weights=m, precision="float32").decompress(d)
               for m, d in ((cc, ours), (tiny_model, theirs))]
    torch.testing.assert_close(decoded[0], decoded[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("quality", [1, 2.5, 3.3, 6])
def test_fractional_qualities_round_trip(model, quality):
    x = smooth_image(70, 90)
    codec = Codec(weights=model, quality=quality, precision="float32")
    data = codec.compress(x)
    header, _ = format.unpack(data)
    assert header.quality == round(quality * 256) / 256  # on the header's grid
    latents = model.analyze(model.pad(x[None]))
    expected = model.reconstruct(model.encode_latents(latents, header.quality), 70, 90,
                                 header.quality)[0, :, :70, :90]
    torch.testing.assert_close(Codec(weights=model).decompress(data), expected, rtol=0,
                               atol=1e-5)


def test_quality_orders_the_rate(model):
    x = smooth_image(96, 128)
    sizes = [len(Codec(weights=model, quality=q).compress(x)) for q in (1, 2, 3.5, 5, 6)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    with pytest.raises(ValueError, match=r"outside this model's range \[1, 6\]"):
        Codec(weights=model, quality=6.5).compress(x)


def test_rate_control_picks_the_highest_quality_that_fits(model):
    x = smooth_image(96, 128)
    codec = Codec(weights=model)
    low, high = (len(Codec(weights=model, quality=q).compress(x)) for q in (1, 6))
    for budget in (low, (low + high) // 2, high + 100):
        data = codec.compress(x, max_bytes=budget)
        q = format.unpack(data)[0].quality
        assert len(data) <= budget
        if q < 6:  # the next step up the grid does not fit
            above = Codec(weights=model, quality=q + 1 / 256).compress(x)
            assert len(above) > budget
    assert codec.compress(x, target_bpp=8 * high / (96 * 128)) == codec.compress(
        x, max_bytes=high)
    with pytest.raises(ValueError, match="even at the lowest quality"):
        codec.compress(x, max_bytes=low - 1)
    with pytest.raises(ValueError, match="not both"):
        codec.compress(x, max_bytes=100, target_bpp=1.0)


def test_rate_control_of_one_fixed_level_and_refinement_of_a_variable_rate_model(tiny_model,
                                                                                 model):
    x = smooth_image(32, 32)
    data = Codec(weights=tiny_model).compress(x)
    assert Codec(weights=tiny_model).compress(x, max_bytes=len(data)) == data
    with pytest.raises(UsageError, match="even at the lowest level"):
        Codec(weights=tiny_model).compress(x, max_bytes=len(data) - 1)
    with pytest.raises(UsageError, match="needs a model of fixed levels"):
        Codec(weights=model).compress(x, max_bytes=1000, refine=Refine(iterations=1))


def test_hyperprior_weights_start_a_channel_conditional_run(tmp_path, tiny_model):
    save_weights(tiny_model, tmp_path / "msh.safetensors")
    folder = tmp_path / "img"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(to_uint8(smooth_image(80, 80, i))).save(folder / f"{i}.png")
    config = TrainConfig(kind="channel_conditional", N=16, M=24, slices=4, hidden=8, steps=2,
                         batch=2, crop=64, data=str(folder), warmup=1, amp=False,
                         init=str(tmp_path / "msh.safetensors"))
    trainer = Trainer(tmp_path / "run", config, device="cpu")
    for k, v in tiny_model.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[k], v.half().float())
    trainer.run(progress=False)
    assert trainer.step == 2


def test_relaxed_with_rounding_is_the_coding_path(model):
    """Refinement's differentiable loss (`relaxed`) with plain rounding: the image and the rate
    of the coding path (float32 against float64, so to a tolerance)."""
    x = model.pad(smooth_image(64, 128)[None])
    latents = model.analyze(x)
    encoded = model.encode_latents(latents, 2.5)
    x_hat, likelihoods = model.relaxed(latents, 2.5, torch.round)
    bits = sum(-torch.log2(lik).sum() for lik in likelihoods)
    assert float(bits) == pytest.approx(float(encoded.bits.sum()), rel=1e-4)
    torch.testing.assert_close(x_hat.clamp(0, 1), model.reconstruct(encoded, 64, 128, 2.5),
                               rtol=0, atol=1e-4)


def test_a_run_can_train_some_levels_only(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    Image.fromarray(to_uint8(smooth_image(64, 64))).save(folder / "0.png")
    config = TrainConfig(kind="channel_conditional", N=16, M=24, slices=2, hidden=8, steps=3,
                         batch=4, crop=64, data=str(folder), warmup=1, amp=False, levels=[2, 5],
                         checkerboard=True)
    trainer = Trainer(tmp_path / "run", config, device="cpu")
    seen = []
    forward = trainer.model.forward
    trainer.model.forward = lambda x, quality: seen.append(quality) or forward(x, quality=quality)
    trainer.run(progress=False)
    assert set(torch.cat(seen).tolist()) <= {2, 5} and len(seen) == 3
    with pytest.raises(ValueError, match="levels must lie in 1..6"):
        Trainer(tmp_path / "bad", TrainConfig(**{**config.__dict__, "levels": [7]}), "cpu")


def test_bfloat16_transforms_leave_the_slices_exact(model):
    check_bfloat16_round_trip(model, smooth_image(64, 96))
