"""`wavefront_step_reference` on the CPU in one C++ call (csrc/int_gemm.cpp: the gather, the
int8 GEMMs, `requantize` and the table indexes), bit for bit. The reference runs about 70 small
torch operations a step, which cost more than its products (a Kodak image's 141 steps through
cheng2020-anchor: 113 ms, of which the products 43; benchmarks/RESULTS.md). x86 CPUs with AVX2,
as the int8 GEMM (`int_conv_gemm.INT8_GEMM`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _int_gemm
from .int_conv_gemm import packed_weight, prepared
from .wavefront_step_reference import WavefrontLayers


def _layer_args(layers: WavefrontLayers) -> tuple[list[tuple], list[Tensor]]:
    """The layers as the C++ step takes them, (packed weight, C, Co, mode, bias, mult, shift)
    addresses and sizes, and the tensors behind the addresses."""
    args, keep = [], []
    for layer in (layers.context, *layers.params):
        vectors = [v.to(torch.int64).contiguous() for v in (layer.bias, layer.mult, layer.shift)]
        packed = packed_weight(layer.weight)
        keep += [packed, *vectors]
        args.append((packed.data_ptr(), layer.weight.shape[1], layer.weight.shape[0],
                     layer.mode, *(v.data_ptr() for v in vectors)))
    return args, keep


def wavefront_step_cpu(taps: Tensor, rows: Tensor, cols: Tensor, params_acc: Tensor,
                       layers: WavefrontLayers) -> tuple[Tensor, Tensor, Tensor]:
    """`wavefront_step_reference`'s (indexes int32, scales int64, means int64), each (B, M, P),
    for CPU tensors."""
    b, m, hp, wp = taps.shape
    h, w = params_acc.shape[2:]
    p = rows.numel()
    taps, params_acc = taps.contiguous(), params_acc.contiguous()
    rows, cols = rows.to(torch.int64).contiguous(), cols.to(torch.int64).contiguous()
    thresholds = layers.thresholds.to(torch.int64).contiguous()
    indexes = torch.empty((b, m, p), dtype=torch.int32)
    scales, means = (torch.empty((b, m, p), dtype=torch.int64) for _ in range(2))
    args, _tensors = prepared(layers, "C++ step", _layer_args)  # held until the call returns
    _int_gemm.wavefront_step(taps.data_ptr(), b, m, hp, wp, rows.data_ptr(), cols.data_ptr(), p,
                             params_acc.data_ptr(), h, w, args, thresholds.data_ptr(),
                             thresholds.numel(), indexes.data_ptr(), scales.data_ptr(),
                             means.data_ptr(), torch.get_num_threads())
    return indexes, scales, means
