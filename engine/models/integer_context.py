"""The entropy parameters of a joint autoregressive model (Minnen, Balle, Toderici, NeurIPS 2018)
in exact integer arithmetic, and the wavefront order that decodes them in parallel.

Every symbol's table and mean come from h_s(z_hat), a 5x5 masked ("mask A") context
convolution over the already decoded y_hat, and the 1x1 entropy-parameter network. In float,
a decoder whose machine rounds differently picks another table and every later symbol is
garbage (CompressAI #279, #309). Here all three run on the integer layers of the hyper-decoder
(`engine.models.integer_hyper`, Balle, Johnston, Minnen, ICLR 2019): int8 weights and
activations, exact int32 sums, integer rescaling. So:

    z_hat -> int8 (2^-input_shift units) -> h_s layers -> params, int8 (2^-s_p)
    y_hat (fixed point, 2^-FRAC_BITS units) -> int8 (2^-y_shift) -> the 12 mask-A taps
        -> context layer -> ctx, int8 (2^-s_p)
    [params, ctx] -> entropy-parameter layers -> (scales, means), int64 fixed point (2^-FRAC_BITS)

The first entropy-parameter layer is linear before its activation, so its params half is
computed for every position at once (`Wavefront`), and each step adds the ctx half: the same
integers as one convolution of the concatenation.

Wavefront: position (h, w) needs (h, w-1), (h, w-2) and rows h-1, h-2 up to column w+2, so every
position with the same w + 3h decodes at once: W + 3(H-1) steps instead of H*W. The encoder runs
the same steps (its means depend on earlier symbols too), so both compute identical integers.
A step, from the gather to the table indexes, is `kernels.dispatch.wavefront_step`: one Triton
kernel on the GPU, the per-layer exact GEMMs on the CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nicengine_kernels.dispatch import int_conv, wavefront_step
from nicengine_kernels.int_conv_reference import FIXED, INT8, LRELU_INT8, PLAIN_INT8
from nicengine_kernels.wavefront_step_reference import CONTEXT_TAPS, IntLayer, WavefrontLayers

from ..entropy.cdf import CdfTables
from .integer_hyper import (
    FRAC_BITS,
    MAX_SHIFT,
    FakeIntegerHyper,
    IntegerHyper,
    IntegerLayer,
    activation_shift,
    check_layers,
    fixed_thresholds,
    layer_from_state,
    layers_from_state,
    to_real,
)

CONTEXT_PAD = 2  # the taps buffer's border: mask A reaches 2 rows up and 2 columns either side


class IntegerContext(IntegerHyper):
    """h_s, the context convolution and the entropy-parameter network as integers, with the
    scale thresholds and the CDF tables (`IntegerHyper`'s). Buffers only: its state dict is the
    weights' companion file, its `fingerprint` goes into every stream.

    `layers`: h_s, the last one PLAIN_INT8 (the params, 2M channels). `context`: a 1x1 layer
    over the taps, weight (2M, 12 M, 1, 1) with input channel c * 12 + tap. `params`: the
    entropy-parameter layers, weight (C1, 4M, 1, 1) first (params channels, then ctx), the last
    one FIXED with 2M outputs: scales, then means.
    """

    def __init__(self, input_shift: int, layers: list[IntegerLayer], y_shift: int,
                 context: IntegerLayer, params: list[IntegerLayer], thresholds: Tensor,
                 tables: CdfTables) -> None:
        super().__init__(input_shift, layers, thresholds, tables)
        self.register_buffer("y_shift", torch.tensor(y_shift, dtype=torch.int64))
        self.context = context
        self.params = nn.ModuleList(params)

    @staticmethod
    def from_state(state: dict[str, Tensor]) -> IntegerContext:
        """Rebuild from a state dict (a companion file); ValueError when it does not fit."""
        try:
            hyper = IntegerHyper.from_state(
                {k: v for k, v in state.items() if not k.startswith(("context.", "params."))
                 and k != "y_shift"})
            model = IntegerContext(
                int(hyper.input_shift), list(hyper.layers), int(state["y_shift"]),
                layer_from_state(state, "context."), layers_from_state(state, "params."),
                hyper.thresholds, hyper.tables())
            model.load_state_dict(state)
        except (KeyError, RuntimeError, TypeError) as e:
            raise ValueError(f"not an integer context model ({str(e).splitlines()[0]})") from None
        if not 0 <= int(model.y_shift) <= MAX_SHIFT:
            raise ValueError(f"not an integer context model (y_shift {int(model.y_shift)})")
        check_layers(model)
        return model

    @staticmethod
    def build(h_s: nn.Sequential, context: Tensor, context_bias: Tensor,
              entropy_parameters: nn.Sequential, z_hat: Tensor, y_hat: Tensor,
              scale_bounds: Tensor, tables: CdfTables) -> IntegerContext:
        """The integers of float networks, calibrated on sample latents (no training): h_s
        (SubpelConv "lrelu" layers, then a stride-1 convolution), the context convolution's
        masked `context` weight (2M, M, 5, 5) and bias, and `entropy_parameters` (1x1
        convolutions with LeakyReLU between them); z_hat (B, N, h, w) and y_hat (B, M, 4h, 4w)
        of a few images set every activation's exponent (`activation_shift`); `scale_bounds`
        (float64) become the fixed-point thresholds."""
        with torch.no_grad():
            shifts = FakeIntegerHyper.calibrate(h_s, z_hat)[:-1]
            hyper = h_s(z_hat)
            taps = torch.stack([context[:, :, dy, dx] for dy, dx in CONTEXT_TAPS], dim=2)
            ctx = F.conv2d(y_hat, context, context_bias, padding=CONTEXT_PAD)
            s_p = min(activation_shift(hyper), activation_shift(ctx))
            s_y = activation_shift(y_hat)
            *hidden, last = FakeIntegerHyper(h_s, shifts + [FRAC_BITS]).layer_params()
            layers = [IntegerLayer.quantized(w, b, shifts[i], shifts[i + 1], r, LRELU_INT8)
                      for i, (w, b, r, _) in enumerate(hidden)]
            layers.append(IntegerLayer.quantized(last[0], last[1], shifts[-1], s_p, 1,
                                                 PLAIN_INT8))
            convs = [m for m in entropy_parameters if isinstance(m, nn.Conv2d)]
            a, ep_shifts = torch.cat([hyper, ctx], dim=1), [s_p]
            for conv in convs[:-1]:
                a = F.leaky_relu(conv(a), 0.01)
                ep_shifts.append(activation_shift(a))
            ep_shifts.append(FRAC_BITS)
            params = [IntegerLayer.quantized(c.weight, c.bias, ep_shifts[i], ep_shifts[i + 1], 1,
                                             LRELU_INT8 if i < len(convs) - 1 else FIXED)
                      for i, c in enumerate(convs)]
            ctx_layer = IntegerLayer.quantized(taps.reshape(taps.shape[0], -1, 1, 1),
                                               context_bias, s_y, s_p, 1, PLAIN_INT8)
        model = IntegerContext(shifts[0], layers, s_y, ctx_layer, params,
                               fixed_thresholds(scale_bounds), tables)
        check_layers(model)
        return model

    def forward(self, z_hat: Tensor) -> Tensor:
        """z_hat (B, N, h, w) -> the params (B, 2M, 4h, 4w), int8."""
        return self.integers(z_hat)

    def wavefront(self, params: Tensor) -> Wavefront:
        """The decoding state of images whose h_s gave `params` (B, 2M, h, w) int8."""
        net = self if params.device.type == "cpu" else self._on_device(params.device)
        return Wavefront(net, params)

    def to_int8(self, y_fixed: Tensor) -> Tensor:
        """y_hat in fixed point (int64, 2^-FRAC_BITS units) -> the context's int8 input,
        round(y_hat * 2^y_shift) (half up) clamped."""
        k = FRAC_BITS - int(self.y_shift)
        v = (y_fixed + (1 << (k - 1))) >> k if k > 0 else y_fixed << -k
        return v.clamp(*INT8).to(torch.int8)


class Wavefront:
    """Decoding (and encoding) y position by position in wavefront order: `steps` steps; step t
    holds the positions (h, w) with w + 3h = t, in increasing h. `step(t)` gives the table
    indexes, scales and means of step t's positions (`kernels.dispatch.wavefront_step`: one
    kernel on the GPU), `put(t, symbols, means)` records their decoded values.
    """

    def __init__(self, net: IntegerContext, params: Tensor) -> None:
        b, _, h, w = params.shape
        self.net, self.height, self.width = net, h, w
        self.M = net.context.weight.shape[0] // 2
        first, *others = net.params
        # The first layer's halves as ordinary tensors even under inference mode: the CPU GEMM
        # caches a weight's float copy while its version counter says it is unchanged.
        with torch.inference_mode(False):
            params_half, ctx_half = (x.contiguous() for x in first.weight.split(2 * self.M, 1))
        self.layers = WavefrontLayers(
            _step_layer(net.context), (_step_layer(first, ctx_half), *map(_step_layer, others)),
            net.thresholds)
        self.params_acc = int_conv(params, params_half)
        p = CONTEXT_PAD
        self.taps = torch.zeros(b, self.M, h + 2 * p, w + 2 * p, dtype=torch.int8,
                                device=params.device)
        self.y_fixed = torch.zeros(b, self.M, h, w, dtype=torch.int64, device=params.device)
        self.steps = wavefront_steps(h, w)

    def positions(self, t: int) -> tuple[Tensor, Tensor]:
        """(rows, cols) of step t, int64 on the device."""
        return wavefront_positions(self.height, self.width, t, self.taps.device)

    def step(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """(table indexes int32, scales, means) of step t's positions, each (B, M, P); scales and
        means int64 in 2^-FRAC_BITS units, an index the number of thresholds below the scale."""
        rows, cols = self.positions(t)
        return wavefront_step(self.taps, rows, cols, self.params_acc, self.layers)

    def decoded_params(self) -> tuple[Tensor, Tensor]:
        """(scales, means) of every position, each (B, M, h, w) int64 (2^-FRAC_BITS units), once
        all are decoded: a position's context holds only positions decoded before it, so these
        are the integers its own step computed. In chunks of positions (memory)."""
        rows, cols = (g.flatten() for g in torch.meshgrid(
            torch.arange(self.height, device=self.taps.device),
            torch.arange(self.width, device=self.taps.device), indexing="ij"))
        parts = [wavefront_step(self.taps, r, c, self.params_acc, self.layers)[1:]
                 for r, c in zip(rows.split(4096), cols.split(4096), strict=True)]
        shape = (self.taps.shape[0], self.M, self.height, self.width)
        return tuple(torch.cat([p[i] for p in parts], dim=2).view(shape) for i in range(2))

    def put(self, t: int, symbols: Tensor, means: Tensor) -> None:
        """Step t's decoded values: symbols (B, M, P) integers, means as `step` gave them."""
        rows, cols = self.positions(t)
        y = symbols.long() * (1 << FRAC_BITS) + means
        self.y_fixed[:, :, rows, cols] = y
        self.taps[:, :, rows + CONTEXT_PAD, cols + CONTEXT_PAD] = self.net.to_int8(y)

    def y_hat(self) -> Tensor:
        """The decoded y_hat (B, M, h, w) float32 (exact while |y_hat| < 2^16)."""
        return to_real(self.y_fixed).float()


def _step_layer(layer: IntegerLayer, weight: Tensor | None = None) -> IntLayer:
    """A 1x1 integer layer as the wavefront step takes it; `weight` in place of its own."""
    return IntLayer(layer.weight if weight is None else weight, layer.bias, layer.mult,
                    layer.shift, int(layer.hidden))


def wavefront_steps(height: int, width: int) -> int:
    """How many wavefront steps an (height, width) latent takes."""
    return width + 3 * (height - 1)


def wavefront_positions(height: int, width: int, t: int, device: torch.device | str = "cpu"
                        ) -> tuple[Tensor, Tensor]:
    """(rows, cols) of the positions of step t: w + 3h = t, 0 <= h < height, 0 <= w < width."""
    low = max(0, -(-(t - width + 1) // 3))
    rows = torch.arange(low, min(height - 1, t // 3) + 1, device=device)
    return rows, t - 3 * rows


def wavefront_counts(height: int, width: int) -> list[int]:
    """The number of positions of every step."""
    return [min(height - 1, t // 3) - max(0, -(-(t - width + 1) // 3)) + 1
            for t in range(wavefront_steps(height, width))]
