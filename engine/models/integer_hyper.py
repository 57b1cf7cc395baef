"""The hyper-synthesis h_s in exact integer arithmetic (Balle, Johnston, Minnen, "Integer networks
for data compression with latent-variable models", ICLR 2019).

h_s decides the tables that code y, and the decoder must derive exactly the encoder's choice.
Float convolutions round differently across devices, ISAs, thread counts and batch sizes;
integer convolutions with integer accumulation cannot. So:

    z_hat (B, N, h, w) -> v_0 = clamp(round(z_hat * 2^s_0))                     int8
    layer l:  acc = conv(v_l, W_l) + b_l                                         int32, exact
              t = acc * m_l[c]            (the rescale m / 2^k, one per output channel; int64)
              t = t if t >= 0 else floor(t * 41 / 4096)      (LeakyReLU, hidden layers only)
              v_{l+1} = clamp(round(t / 2^k_l[c]), -128, 127), pixel shuffle     int8
    last:     (scales, means) = round(t / 2^k[c]) in units of 2^-FRAC_BITS       int64
    index = how many of the integer `thresholds` lie strictly below the fixed-point scale

Every step is an integer operation (`nicengine_kernels.dispatch.int_conv` is bit-exact on every
backend), so the scale indexes and the means are the same on any machine. The thresholds are the
scale table's bounds in fixed point, and the model's CDF tables are stored with the weights as
integers (`tables`), so no float library takes part in what the decoder derives.

`FakeIntegerHyper` is the same network in float with straight-through rounding: what
quantization-aware fine-tuning (`engine.train.integerize`) trains, and what `IntegerHyper.build`
turns into integers.
"""

from __future__ import annotations

import copy
import zlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nicengine_kernels.dispatch import int_conv
from nicengine_kernels.int_conv_reference import (
    FIXED,
    INT8,
    LRELU_INT8,
    LRELU_NUM,
    LRELU_SHIFT,
    requantize,
)

from ..entropy.cdf import CdfTables
from .layers import SubpelConv

FRAC_BITS = 8  # fractional bits of the output scales and means
MULT_BITS = 15  # rescale multipliers lie in [2^14, 2^15)
MAX_SHIFT = 16  # activation exponents: no finer than 2^-16 (a layer that is all but 0)


class IntegerLayer(nn.Module):
    """One convolution of the integer network; all buffers, no parameters. (Co, C, k, k) int8
    weights, int32 bias, per-channel multiplier and shift; `upscale` r (pixel shuffle after the
    activation, 1 for none) and `hidden`, the output (`kernels.int_conv_reference`'s FIXED,
    LRELU_INT8 or PLAIN_INT8; True is LRELU_INT8; named for h_s's hidden layers), as 0-d int64
    buffers."""

    def __init__(self, weight: Tensor, bias: Tensor, mult: Tensor, shift: Tensor, upscale: int,
                 hidden: bool | int) -> None:
        super().__init__()
        self.register_buffer("weight", weight.to(torch.int8))
        self.register_buffer("bias", bias.to(torch.int32))
        self.register_buffer("mult", mult.to(torch.int32))
        self.register_buffer("shift", shift.to(torch.int32))
        self.register_buffer("upscale", torch.tensor(upscale, dtype=torch.int64))
        self.register_buffer("hidden", torch.tensor(int(hidden), dtype=torch.int64))

    @staticmethod
    def quantized(weight: Tensor, bias: Tensor, in_shift: int, out_shift: int, upscale: int,
                  hidden: int) -> IntegerLayer:
        """The integer layer of a float convolution `weight` (Co, C, k, k) with `bias` (Co,),
        whose input counts units of 2^-in_shift and whose output counts 2^-out_shift: int8
        weights with a step of max |w| / 127 per output channel, the rescale as a 15-bit
        multiplier and a shift."""
        step = _weight_step(weight)
        w_int = torch.round(weight / step.view(-1, 1, 1, 1)).clamp(-127, 127)
        in_unit = 2.0**-in_shift
        b_int = torch.round(bias.double() / (step.double() * in_unit))
        # acc counts units of step * 2^-in_shift; the output counts 2^-out_shift.
        ratio = step.double() * in_unit * 2.0**out_shift
        mantissa, exponent = torch.frexp(ratio)  # ratio = mantissa * 2^exponent, [0.5, 1)
        mult = torch.round(mantissa * 2.0**MULT_BITS)
        return IntegerLayer(w_int, b_int, mult, MULT_BITS - exponent, upscale, hidden)

    def forward(self, v: Tensor) -> Tensor:
        """v (B, C, H, W) int8 -> (B, Co/r^2, rH, rW): int8, or int64 fixed point (FIXED)."""
        return self.requantize(int_conv(v, self.weight))

    def requantize(self, acc: Tensor) -> Tensor:
        """The layer after its convolution: acc (B, Co, H, W) int32 or int64 (the exact
        convolution, without the bias) -> the output as `forward` returns it."""
        out = requantize(acc, self.bias, self.mult, self.shift, int(self.hidden))
        r = int(self.upscale)
        return F.pixel_shuffle(out, r) if r > 1 else out


class IntegerHyper(nn.Module):
    """h_s as integers, with the scale thresholds and the model's CDF tables.

    z_hat (B, N, h, w) -> (scales, means) (B, 2M, 4h, 4w) float64, exact multiples of
    2^-FRAC_BITS; a scale's table is given by `scale_bounds`. Buffers only: its state dict is
    what the weights' companion file stores (`engine.zoo`), and `fingerprint` goes into every
    stream coded with it.
    """

    def __init__(self, input_shift: int, layers: list[IntegerLayer], thresholds: Tensor,
                 tables: CdfTables) -> None:
        super().__init__()
        self.register_buffer("input_shift", torch.tensor(input_shift, dtype=torch.int64))
        self.layers = nn.ModuleList(layers)
        self.register_buffer("thresholds", thresholds.to(torch.int64))
        self.register_buffer("table_cdfs", torch.from_numpy(tables.cdfs).to(torch.int32))
        self.register_buffer("table_sizes", torch.from_numpy(tables.sizes).to(torch.int32))
        self.register_buffer("table_offsets", torch.from_numpy(tables.offsets).to(torch.int32))
        self._derived: dict[str, object] = {}  # tables, fingerprint, copies on other devices

    @staticmethod
    def from_state(state: dict[str, Tensor]) -> IntegerHyper:
        """Rebuild from a state dict (a companion file); ValueError when it does not fit."""
        try:
            layers = layers_from_state(state, "layers.")
            tables = CdfTables(state["table_cdfs"].numpy(), state["table_sizes"].numpy(),
                               state["table_offsets"].numpy())
            model = IntegerHyper(int(state["input_shift"]), layers, state["thresholds"], tables)
            model.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError) as e:
            raise ValueError(f"not an integer hyper-decoder ({str(e).splitlines()[0]})") from None
        for k, v in model.state_dict().items():
            if state[k].dtype != v.dtype:
                raise ValueError(f"not an integer hyper-decoder ({k} is {state[k].dtype}, not "
                                 f"{v.dtype})")
        check_layers(model)
        return model

    def tables(self) -> CdfTables:
        if "tables" not in self._derived:
            self._derived["tables"] = CdfTables(self.table_cdfs.numpy(), self.table_sizes.numpy(),
                                                self.table_offsets.numpy())
        return self._derived["tables"]

    @property
    def fingerprint(self) -> int:
        """CRC32 over the names and bytes of every buffer (computed once: every coded stream
        and every decoded one asks for it)."""
        if "fingerprint" not in self._derived:
            crc = 0
            for name, t in sorted(self.state_dict().items()):
                crc = zlib.crc32(name.encode(), crc)
                crc = zlib.crc32(t.cpu().contiguous().numpy().tobytes(), crc)
            self._derived["fingerprint"] = crc
        return self._derived["fingerprint"]

    def forward(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, N, h, w) -> (scales, means) as (B, 2M, 4h, 4w) float64."""
        return to_real(self.integers(z_hat))

    def integers(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, N, h, w) -> the last layer's integers: int64 fixed point (FIXED), or int8
        (PLAIN_INT8: the joint autoregressive model's params)."""
        net = self if z_hat.device.type == "cpu" else self._on_device(z_hat.device)
        v = torch.round(z_hat.double() * 2.0 ** int(net.input_shift)).clamp(*INT8).to(torch.int8)
        for layer in net.layers:
            v = layer(v)
        return v

    def scale_bounds(self, device: torch.device) -> Tensor:
        """The table index rule's bounds, float64: a scale's index is how many lie strictly below
        it. Exact multiples of 2^-FRAC_BITS, so comparing them with the exact fixed-point scales
        is the integer comparison."""
        return to_real(self.thresholds.to(device))

    def _on_device(self, device: torch.device) -> IntegerHyper:
        key = str(device)
        if key not in self._derived:
            self._derived[key] = copy.deepcopy(self).to(device)
        return self._derived[key]

    @staticmethod
    def build(fake: FakeIntegerHyper, scale_bounds: Tensor, tables: CdfTables) -> IntegerHyper:
        """The integers of a trained `FakeIntegerHyper`; `scale_bounds` are the float64 table
        bounds (`engine.entropy.gaussian.scale_bounds`), stored as fixed-point thresholds."""
        shifts = fake.shifts
        layers = [IntegerLayer.quantized(conv_w, bias, shifts[i], shifts[i + 1], r,
                                         LRELU_INT8 if hidden else FIXED)
                  for i, (conv_w, bias, r, hidden) in enumerate(fake.layer_params())]
        model = IntegerHyper(shifts[0], layers, fixed_thresholds(scale_bounds), tables)
        check_layers(model)
        return model


def to_real(fixed: Tensor) -> Tensor:
    """Fixed-point integers (2^-FRAC_BITS units) as exact float64 values."""
    return fixed.double() * 2.0**-FRAC_BITS


def fixed_thresholds(scale_bounds: Tensor) -> Tensor:
    """Float64 table bounds as the fixed-point thresholds the integer scales are compared
    with: scale > bound <=> fixed > bound * 2^FRAC_BITS <=> fixed > floor(bound * 2^FRAC_BITS)."""
    return torch.floor(scale_bounds.double().cpu() * 2.0**FRAC_BITS)


def layer_from_state(state: dict[str, Tensor], prefix: str) -> IntegerLayer:
    """The integer layer PREFIX of a state dict (KeyError when it lacks a buffer)."""
    p = prefix
    return IntegerLayer(state[p + "weight"], state[p + "bias"], state[p + "mult"],
                        state[p + "shift"], int(state[p + "upscale"]), int(state[p + "hidden"]))


def layers_from_state(state: dict[str, Tensor], prefix: str) -> list[IntegerLayer]:
    """The integer layers PREFIX0., PREFIX1., ... of a state dict."""
    layers = []
    while f"{prefix}{len(layers)}.weight" in state:
        layers.append(layer_from_state(state, f"{prefix}{len(layers)}."))
    return layers


def check_layers(model: nn.Module) -> None:
    """The bounds that keep every intermediate inside its integer type, for every integer layer
    of `model`."""
    for i, layer in enumerate(m for m in model.modules() if isinstance(m, IntegerLayer)):
        shift = layer.shift.long()
        if not (bool((shift >= 1).all()) and bool((shift <= 62).all())
                and bool((layer.mult >= 0).all()) and bool((layer.mult < 1 << MULT_BITS).all())):
            raise ValueError(f"integer layer {i}: multiplier or shift out of range")


def activation_shift(a: Tensor, quantile: float = 0.9999) -> int:
    """The int8 exponent of float activations `a` on sample data: the largest s (at most
    MAX_SHIFT) with quantile(|a|) * 2^s <= 127 (rare larger values clamp)."""
    q = torch.quantile(a.detach().abs().flatten()[: 1 << 24].float(), quantile).item()
    return min(MAX_SHIFT, int(torch.floor(torch.log2(torch.tensor(127 / max(q, 1e-6))))))


def _weight_step(w: Tensor) -> Tensor:
    """Per-output-channel quantization step of a conv kernel (Co, C, k, k): max |w| / 127."""
    return (w.detach().abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12)


def _ste_round(x: Tensor) -> Tensor:
    return x + (torch.round(x) - x).detach()


class FakeIntegerHyper(nn.Module):
    """`IntegerHyper`'s function in float, differentiable (straight-through rounding), around
    the trainable layers of a float h_s: nn.Sequential of SubpelConv (act "lrelu") layers ending
    in a Conv2d with stride 1, the mean-scale hyperprior's (`engine.models.hyperprior`).

    `shifts`: the activation exponents s_0 (input), s_1 .. s_{L-1} (hidden outputs), and
    FRAC_BITS for the output; chosen by `calibrate`.
    """

    def __init__(self, h_s: nn.Sequential, shifts: list[int]) -> None:
        super().__init__()
        *hidden, last = list(h_s)
        if not (all(isinstance(m, SubpelConv) and m.act == "lrelu" for m in hidden)
                and isinstance(last, nn.Conv2d) and last.stride == (1, 1)
                and last.bias is not None):
            raise ValueError("an integer h_s needs SubpelConv(lrelu) layers and a stride-1 conv")
        self.h_s = h_s
        self.shifts = list(shifts)

    def layer_params(self) -> list[tuple[Tensor, Tensor, int, bool]]:
        """(conv weight, bias per conv output channel, upscale, hidden) of every layer."""
        *hidden, last = list(self.h_s)
        return ([(m.conv.weight, m.bias, m.r, True) for m in hidden]
                + [(last.weight, last.bias, 1, False)])

    @staticmethod
    def calibrate(h_s: nn.Sequential, z_hat: Tensor, quantile: float = 0.9999) -> list[int]:
        """Activation exponents from float activations on sample data (`activation_shift`)."""
        shifts = [activation_shift(z_hat, quantile)]
        a = z_hat
        with torch.no_grad():
            for m in list(h_s)[:-1]:
                a = m(a)
                shifts.append(activation_shift(a, quantile))
        return shifts + [FRAC_BITS]

    def forward(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, N, h, w) -> (scales, means) as (B, 2M, 4h, 4w), on the fixed-point grid."""
        s = self.shifts
        a = _fake_quant(z_hat, s[0])
        for i, (w, bias, r, hidden) in enumerate(self.layer_params()):
            step = _weight_step(w).view(-1, 1, 1, 1)
            w_q = _ste_round(w / step).clamp(-127, 127) * step
            b_unit = step.view(-1) * 2.0 ** -s[i]
            out = F.conv2d(a, w_q, _ste_round(bias / b_unit) * b_unit, padding=w.shape[-1] // 2)
            if hidden:
                out = torch.where(out >= 0, out, out * (LRELU_NUM / 2**LRELU_SHIFT))
                out = F.pixel_shuffle(_fake_quant(out, s[i + 1]), r)
            else:
                out = _ste_round(out * 2.0 ** s[i + 1]) * 2.0 ** -s[i + 1]
            a = out
        return a


def _fake_quant(a: Tensor, shift: int) -> Tensor:
    """round(a * 2^shift) clamped to int8, back in a's units; gradient straight through inside
    the range, zero where clamped."""
    scale = 2.0**shift
    return _ste_round(a * scale).clamp(*INT8) / scale
