"""One step of the wavefront that codes a joint autoregressive model's latent
(`engine.models.integer_context.Wavefront`), in exact integers, in PyTorch: the definition the
fused kernel (`kernels/wavefront_step.py`) is tested against, bit for bit.

For the P positions (rows, cols) of the step, in every image of the batch:

    gather the 12 mask-A taps of the int8 y_hat buffer `taps` (B, M, h+4, w+4), padded by 2 on
        every side: position (r, c) reads taps[:, :, r + dy, c + dx], (dy, dx) in CONTEXT_TAPS
    context layer, 1x1 over the 12 M gathered values (input channel m * 12 + tap) -> int8
    first entropy-parameter layer: its ctx half over that, plus `params_acc` (its params half,
        computed for every position at once) -> int8
    the other entropy-parameter layers; the last (FIXED, 2M outputs) gives the scales (the first
        M) and the means, int64 fixed point
    index = how many of the thresholds lie strictly below the scale

Every layer ends in `requantize`, the integer layers' one rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

from .int_conv_reference import FIXED, int_conv_reference, requantize

# Mask A of a 5x5 context: rows 0 and 1 whole, row 2 left of the centre, in raster order. Tap j
# is (j // 5, j % 5), which the kernel computes.
CONTEXT_TAPS = [(dy, dx) for dy in range(2) for dx in range(5)] + [(2, 0), (2, 1)]
_TAP_ROWS = torch.tensor([dy for dy, _ in CONTEXT_TAPS])
_TAP_COLS = torch.tensor([dx for _, dx in CONTEXT_TAPS])


class IntLayer(NamedTuple):
    """A 1x1 integer layer: weight (Co, C, 1, 1) int8; bias, mult, shift (Co,) int32; mode
    FIXED, LRELU_INT8 or PLAIN_INT8 (`requantize`)."""

    weight: Tensor
    bias: Tensor
    mult: Tensor
    shift: Tensor
    mode: int

    def __call__(self, acc: Tensor) -> Tensor:
        return requantize(acc, self.bias, self.mult, self.shift, self.mode)


@dataclass
class WavefrontLayers:
    """What a step computes with: the context layer (12 M inputs, 2M int8 outputs), the
    entropy-parameter layers (the first one's weight: its ctx half, (C1, 2M, 1, 1); the last one
    FIXED with 2M outputs, the others int8) and the scale thresholds (T,) int64, sorted; all on
    one device."""

    context: IntLayer
    params: tuple[IntLayer, ...]
    thresholds: Tensor

    def __post_init__(self) -> None:
        *hidden, last = (self.context, *self.params)
        m = last.weight.shape[0] // 2
        if (any(layer.mode == FIXED for layer in hidden) or last.mode != FIXED
                or self.context.weight.shape[:2] != (2 * m, 12 * m)
                or self.params[0].weight.shape[1] != 2 * m):
            raise ValueError("a wavefront step takes a context layer (2M, 12M), int8 hidden "
                             "layers, and a last FIXED layer with 2M outputs")

    @cached_property
    def packed(self) -> tuple[Tensor, Tensor, Tensor]:
        """The layers as the kernel reads them: every weight flattened, in order (int8); the
        bias, mult and shift of every layer, (3, sum of Co) int32; per layer (C, Co, mode),
        (L, 3) int32."""
        layers = (self.context, *self.params)
        device = self.thresholds.device
        weights = torch.cat([layer.weight.reshape(-1) for layer in layers])
        vectors = torch.stack([torch.cat([getattr(layer, name).to(torch.int32)
                                          for layer in layers])
                               for name in ("bias", "mult", "shift")])
        table = torch.tensor([[layer.weight.shape[1], layer.weight.shape[0], layer.mode]
                              for layer in layers], dtype=torch.int32, device=device)
        return weights, vectors, table


def wavefront_step_reference(taps: Tensor, rows: Tensor, cols: Tensor, params_acc: Tensor,
                             layers: WavefrontLayers,
                             conv: Callable[[Tensor, Tensor], Tensor] = int_conv_reference
                             ) -> tuple[Tensor, Tensor, Tensor]:
    """taps (B, M, h+4, w+4) int8, rows and cols (P,) int64 (the step's positions, unpadded),
    params_acc (B, C1, h, w) int32 -> (table indexes int32, scales int64, means int64), each
    (B, M, P). `conv`: the exact 1x1 convolution (B, C, 1, P) int8 x (Co, C, 1, 1) int8 -> int32,
    `int_conv_reference` or one bit-identical to it (`kernels.dispatch.int_conv`)."""
    b, m = taps.shape[:2]
    p = rows.numel()
    gathered = taps[:, :, rows[None] + _TAP_ROWS.to(rows.device)[:, None],
                    cols[None] + _TAP_COLS.to(cols.device)[:, None]]  # (B, M, 12, P)
    context = layers.context
    v = context(conv(gathered.reshape(b, -1, 1, p), context.weight))
    first, *others = layers.params
    v = first(params_acc[:, :, rows, cols].unsqueeze(2) + conv(v, first.weight))
    for layer in others:
        v = layer(conv(v, layer.weight))
    scales, means = v[:, :m, 0].contiguous(), v[:, m:, 0].contiguous()
    indexes = torch.bucketize(scales, layers.thresholds, right=False).to(torch.int32)
    return indexes, scales, means
