"""Exporting a model's networks to ONNX, for ONNX Runtime, TensorRT or OpenVINO.

The engine keeps its networks in torch and its tables and coder outside them, so each network
exports on its own: one ONNX file per network (dynamic batch, height and width), the CDF tables
and the per-channel constants the coding steps need in `tables.npz`, and `model.json`, which says
how the networks, the tables and the coder connect. A kind declares its networks in `EXPORTS`
(`@exports(Kind)` on a function of the model and quality), so adding a kind is one entry.

Export traces the PyTorch references of the engine's kernels (NIC_KERNELS=reference) in float32,
without gradients (GDN's lower bound is then a plain clamp), and never NNPACK's private Winograd
convolution (`engine.models.layers`). The exported networks compute what the engine's float32
networks compute. Where the engine decides CDF tables with an exact integer hyper-decoder, that
one is exported too, built from ONNX's integer operators (`integer_hyper_graph`), bit-exact;
where it decides them in float64, model.json says so: a table decision from a float32 network
may differ from the engine's, and then an engine stream does not decode.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import Tensor, nn

from .entropy.gaussian import SCALES, scale_indexes
from .models import (
    ChannelConditional,
    CodingModel,
    CompressiveAutoencoder,
    JointAutoregressive,
    MeanScaleHyperprior,
)
from .models.factorized_prior import FactorizedPrior
from .models.integer_hyper import FRAC_BITS, LRELU_NUM, LRELU_SHIFT, IntegerHyper
from .models.scale_hyperprior import ScaleHyperprior
from .zoo import fingerprint

FORMAT = "nicengine-onnx/1"  # model.json's "format"
OPSET = 18
TABLES = "tables.npz"


@dataclass(frozen=True)
class Port:
    """A network's input or output: (B, channels, H / stride, W / stride) for the padded image
    size H x W (stride 1: the image itself), of `dtype`."""

    name: str
    channels: int
    stride: int
    dtype: str = "float32"

    def shape(self) -> list[int | str]:
        """As model.json gives it, e.g. ["B", 128, "H/16", "W/16"]."""
        if self.stride == 1:
            return ["B", self.channels, "H", "W"]
        return ["B", self.channels, f"H/{self.stride}", f"W/{self.stride}"]

    def example(self, height: int, width: int) -> Tensor:
        """An input of this port for a padded image of height x width (images in [0, 1])."""
        # Batch 2: torch.export fixes a dimension whose example is 1.
        shape = (2, self.channels, height // self.stride, width // self.stride)
        return torch.rand(shape) if self.stride == 1 else torch.randn(shape)

    def to_json(self) -> dict:
        return {"name": self.name, "shape": self.shape(), "dtype": self.dtype}


@dataclass(frozen=True)
class Network:
    """One exported network: `fn` maps the inputs to the outputs (a tensor, or a tuple of them,
    in the ports' order); `use` says what the codec does with it. `graph`, where given, builds
    the ONNX graph directly instead of tracing `fn` (which remains its reference)."""

    name: str
    fn: Callable[..., Tensor | tuple[Tensor, ...]]
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    use: str
    graph: Callable[[], onnx.ModelProto] | None = None


@dataclass
class KindExport:
    """What a kind exports at one quality: its networks, the arrays its coding steps need beside
    the CDF tables (`tables.npz`), and how a codec uses them (model.json's "coding")."""

    networks: list[Network]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    coding: dict = field(default_factory=dict)


# Model kind (ARCH) -> its declaration.
EXPORTS: dict[str, Callable[[CodingModel, float], KindExport]] = {}


def exports(kind: type[CodingModel]) -> Callable:
    """Register a kind's declaration: f(model, quality) -> KindExport. Exact kinds only: a
    subclass (a scale hyperprior is a mean-scale hyperprior) declares its own."""

    def register(f: Callable[[CodingModel, float], KindExport]) -> Callable:
        EXPORTS[kind.ARCH] = f
        return f

    return register


class _Function(nn.Module):
    """A network as a module (what torch.onnx.export takes)."""

    def __init__(self, fn: Callable[..., Tensor | tuple[Tensor, ...]]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        return self.fn(*inputs)


@contextmanager
def _reference_kernels() -> Iterator[None]:
    """NIC_KERNELS=reference for the duration (kernels.dispatch reads it on every call)."""
    before = os.environ.get("NIC_KERNELS")
    os.environ["NIC_KERNELS"] = "reference"
    try:
        yield
    finally:
        if before is None:
            del os.environ["NIC_KERNELS"]
        else:
            os.environ["NIC_KERNELS"] = before


@contextmanager
def _quiet() -> Iterator[None]:
    """Without the exporter's progress notes and its warnings about optional packages."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: CodingModel, quality: float, out_dir: str | Path) -> dict:
    """Write every network of `model` as OUT_DIR/NAME.onnx, the tables as OUT_DIR/tables.npz
    and OUT_DIR/model.json (returned). ValueError for a kind without a declaration, or a quality
    a variable-rate model does not code at."""
    declare = EXPORTS.get(model.ARCH)
    if declare is None:
        raise ValueError(f"no ONNX export for model kind {model.ARCH!r}; exportable: "
                         f"{sorted(EXPORTS)}")
    if model.VARIABLE_RATE:
        low, high = model.quality_range()
        if not low <= quality <= high:
            raise ValueError(f"quality {quality:g} is outside this model's range "
                             f"[{low:g}, {high:g}]")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = declare(model, quality)
    tables = model.tables()
    np.savez(out / TABLES, cdfs=tables.cdfs, sizes=tables.sizes, offsets=tables.offsets,
             **kind.arrays)
    networks = {}
    for net in kind.networks:
        path = out / f"{net.name}.onnx"
        if net.graph is None:
            _export_network(net, model.padded(128), model.padded(192), path)
        else:
            onnx.save(net.graph(), str(path))
        networks[net.name] = {"file": f"{net.name}.onnx",
                              "inputs": [p.to_json() for p in net.inputs],
                              "outputs": [p.to_json() for p in net.outputs], "use": net.use}
    info = model.info
    integer = model.integer_hyper
    doc = {
        "format": FORMAT,
        "model": {"kind": model.ARCH, "kind_id": model.KIND_ID, "config": model.config.to_dict(),
                  "quality": quality,
                  "fingerprint": f"{info.fingerprint if info else fingerprint(model):08x}",
                  "integer_hyper_fingerprint": f"{integer.fingerprint:08x}" if integer else None,
                  "weights": info.path if info else None},
        "align": model.ALIGN,
        "padding": (f"H and W below are the image's height and width rounded up to multiples of "
                    f"{model.ALIGN}{_min_side(model)}: replicate the last row and column up to "
                    f"them; crop the decoded image back"),
        "opset": OPSET,
        "networks": networks,
        "tables": {"file": TABLES, "fingerprint": f"{tables.fingerprint:08x}",
                   "cdfs": "int32 (T, K): table t's CDF on [:sizes[t] + 1], 16-bit precision; "
                           "symbol s codes value offsets[t] + s, the last symbol (sizes[t] - 1) "
                           "is the escape of values outside the range (docs/CODER.md)",
                   "arrays": sorted(kind.arrays)},
        "coding": {"symbols": "each pass's symbols in (C, h, w) order per image", **kind.coding},
    }
    (out / "model.json").write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def _min_side(model: CodingModel) -> str:
    side = getattr(model, "MIN_SIDE", 0)
    return f" and to at least {side}" if side else ""


def _export_network(net: Network, height: int, width: int, path: Path) -> None:
    """One network through torch.export, batch, height and width dynamic."""
    batch = torch.export.Dim("B")
    dims = {}  # one height and width symbol per stride: ports of one stride share their size
    shapes = []
    for p in net.inputs:
        if p.stride not in dims:
            dims[p.stride] = (torch.export.Dim(f"h{p.stride}"), torch.export.Dim(f"w{p.stride}"))
        shapes.append({0: batch, 2: dims[p.stride][0], 3: dims[p.stride][1]})
    args = tuple(p.example(height, width) for p in net.inputs)
    with _reference_kernels(), torch.no_grad(), _quiet():
        program = torch.onnx.export(
            _Function(net.fn).eval(), args, dynamo=True, opset_version=OPSET,
            input_names=[p.name for p in net.inputs],
            output_names=[p.name for p in net.outputs], dynamic_shapes=(tuple(shapes),),
            verbose=False)
    program.save(str(path), external_data=False)


# --- the kinds ---------------------------------------------------------------------------------


def _transforms(m: int, stride: int, analysis: Callable, synthesis: Callable) -> list[Network]:
    return [Network("g_a", analysis, (Port("x", 3, 1),), (Port("y", m, stride),),
                    "analysis: the padded image in [0, 1] to the latents"),
            Network("g_s", synthesis, (Port("y_hat", m, stride),), (Port("x_hat", 3, 1),),
                    "synthesis: x_hat = clamp(output, 0, 1), cropped to the image's size")]


def _hyper_networks(model: MeanScaleHyperprior, h_s_use: str) -> list[Network]:
    N, M = model.config.N, model.config.M
    return [
        *_transforms(M, 16, model.g_a, model.g_s),
        Network("h_a", model.h_a, (Port("y", M, 16),), (Port("z", N, 64),),
                "hyper-analysis (encoder only)"),
        Network("h_s", lambda z_hat: model.h_s(z_hat).chunk(2, 1), (Port("z_hat", N, 64),),
                (Port("scales", M, 16), Port("means", M, 16)), h_s_use),
    ]


def _hyper_coding(model: MeanScaleHyperprior, y_step: str) -> tuple[dict, dict]:
    """(arrays, coding) of the two passes of a hyperprior: z by channel, y by Gaussian scale."""
    N = model.config.N
    arrays = {"z_medians": model.entropy_z.medians.float().numpy()}
    integer = model.integer_hyper
    if integer is None:
        arrays["scale_bounds"] = SCALES[:-1].copy()
        decision = ("the engine runs h_s in float64 and takes index(s) = the number of "
                    "scale_bounds (float64) strictly below s; h_s.onnx is float32, so a scale "
                    "next to a bound may land on the other side and the engine's streams then "
                    "do not decode: for bit-exact decisions run h_s in float64")
    else:
        arrays["scale_thresholds"] = integer.thresholds.numpy()
        decision = (f"these weights have an integer hyper-decoder (NAME.int.safetensors, "
                    f"engine/models/integer_hyper.py), with which the engine codes: "
                    f"h_s_integer.onnx is it, bit-exact (int8 x int8 ConvInteger, int64 "
                    f"rescaling): its scales and means are multiples of 2^-{FRAC_BITS}, and its "
                    f"indexes output is each y symbol's table ({N} + the number of "
                    f"scale_thresholds strictly below scale * 2^{FRAC_BITS}); use its means and "
                    f"indexes to code the engine's streams. h_s.onnx is the float network it "
                    f"approximates: its table decisions are not the engine's")
    coding = {
        "passes": [
            {"symbols": "z", "shape": [N, "H/64", "W/64"], "stream": "whole, in stream 0",
             "value": "round(z - z_medians[c])", "table": "c (the channel)"},
            {"symbols": "y", "shape": [model.config.M, "H/16", "W/16"],
             "stream": "split across the streams",
             "value": y_step, "table": f"{N} + index(scales)"},
        ],
        "decode": ["z_hat = z symbols + z_medians[c]",
                   "(scales, means) = h_s(z_hat) (as table_decisions says: in float64, or "
                   "h_s_integer)",
                   "y_hat = y symbols + means", "x_hat = clamp(g_s(y_hat), 0, 1)"],
        "table_decisions": decision,
    }
    return arrays, coding


@exports(MeanScaleHyperprior)
def _mean_scale(model: MeanScaleHyperprior, quality: float) -> KindExport:
    arrays, coding = _hyper_coding(model, "round(y - means)")
    networks = _hyper_networks(model, "hyper-synthesis in float32: y's tables and means "
                                      "(table_decisions says whether the engine uses it)")
    integer = model.integer_hyper
    if integer is not None:
        N, M = model.config.N, model.config.M

        def reference(z_hat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            scales, means, bounds = model.hyper_decode(z_hat, integer=True)
            return scales, means, scale_indexes(scales, bounds) + N

        networks.append(Network(
            "h_s_integer", reference, (Port("z_hat", N, 64),),
            (Port("scales", M, 16, "float64"), Port("means", M, 16, "float64"),
             Port("indexes", M, 16, "int32")),
            "the exact integer hyper-synthesis the engine codes with: y's means and tables",
            graph=lambda: integer_hyper_graph(integer, N)))
    return KindExport(networks, arrays, coding)


@exports(JointAutoregressive)
def _joint_autoregressive(model: JointAutoregressive, quality: float) -> KindExport:
    """The float networks, the context convolution and the entropy parameters over whole
    latents (training's parallel form: for a given y_hat, every position's parameters). The
    engine codes only with its integer context model, whose integers these approximate."""
    N, M = model.config.N, model.config.M
    integer = model.integer_hyper
    networks = [
        *_transforms(M, 16, model.g_a, model.g_s),
        Network("h_a", model.h_a, (Port("y", M, 16),), (Port("z", N, 64),),
                "hyper-analysis (encoder only)"),
        Network("h_s", model.h_s, (Port("z_hat", N, 64),), (Port("params", 2 * M, 16),),
                "hyper-synthesis: the entropy parameters' hyperprior input"),
        Network("context", model.context_prediction, (Port("y_hat", M, 16),),
                (Port("ctx", 2 * M, 16),),
                "5x5 mask-A context convolution over the decoded y_hat (each position sees "
                "the two rows above and the two positions to its left)"),
        Network("entropy_parameters",
                lambda params, ctx: model.entropy_parameters(torch.cat([params, ctx], 1))
                .chunk(2, 1),
                (Port("params", 2 * M, 16), Port("ctx", 2 * M, 16)),
                (Port("scales", M, 16), Port("means", M, 16)),
                "1x1 network: y's scales and means at every position"),
    ]
    arrays = {"z_medians": model.entropy_z.medians.float().numpy()}
    if integer is not None:
        arrays["scale_thresholds"] = integer.thresholds.numpy()
    coding = {
        "passes": [
            {"symbols": "z", "shape": [N, "H/64", "W/64"], "stream": "whole, in stream 0",
             "value": "round(z - z_medians[c])", "table": "c (the channel)"},
            {"symbols": "y, one pass per wavefront step t = w + 3h (docs/FORMAT.md, kind 6)",
             "shape": [M, 1, "positions of the step"], "stream": "split across the streams",
             "value": "round(y - means)", "table": f"{N} + index(scales)"},
        ],
        "decode": ["z_hat = z symbols + z_medians[c]", "params = h_s(z_hat)",
                   "for each step: (scales, means) of its positions from params and "
                   "context(y_hat decoded so far); y_hat = symbols + means",
                   "x_hat = clamp(g_s(y_hat), 0, 1)"],
        "table_decisions": "the engine codes these models only with their integer context "
                           "model (NAME.int.safetensors, engine/models/integer_context.py): h_s, "
                           "the context and the entropy parameters in int8 with exact integer "
                           "sums, means in fixed point. The float networks here approximate it; "
                           "their tables and means are not the engine's, so they cannot decode "
                           "its streams",
    }
    return KindExport(networks, arrays, coding)


@exports(ScaleHyperprior)
def _scale(model: ScaleHyperprior, quality: float) -> KindExport:
    arrays, coding = _hyper_coding(model, "round(y) (means are 0)")
    h_s_use = "hyper-synthesis: decides y's tables (its means output is all zeros)"
    return KindExport(_hyper_networks(model, h_s_use), arrays, coding)


@exports(FactorizedPrior)
def _factorized(model: FactorizedPrior, quality: float) -> KindExport:
    M = model.config.M
    coding = {
        "passes": [{"symbols": "y", "shape": [M, "H/16", "W/16"],
                    "stream": "split across the streams", "value": "round(y - y_medians[c])",
                    "table": "c (the channel)"}],
        "decode": ["y_hat = y symbols + y_medians[c]", "x_hat = clamp(g_s(y_hat), 0, 1)"],
    }
    return KindExport(_transforms(M, 16, model.g_a, model.g_s),
                      {"y_medians": model.entropy_y.medians.float().numpy()}, coding)


@exports(CompressiveAutoencoder)
def _cae(model: CompressiveAutoencoder, quality: float) -> KindExport:
    C, n = model.config.channels, model.mask.count
    first, _, start = model.table_layout()
    arrays = {"scales": model.scales(quality, torch.device("cpu")).view(-1).numpy(),
              "channel_tables": (start + model.grid_points(quality)[:n] - first).astype(np.int32)}
    coding = {
        "passes": [{"symbols": "y", "shape": [n, "H/8", "W/8"],
                    "stream": "split across the streams",
                    "value": f"round(y[c] * scales[c]) for the first {n} channels",
                    "table": "channel_tables[c]"}],
        "decode": [f"y_hat[c] = symbols / scales[c] for c < {n}, 0 for the other {C - n}",
                   "x_hat = clamp(g_s(y_hat), 0, 1)"],
        "quality": "scales and channel_tables are this quality's; the networks serve every "
                   "quality of the model's range",
    }
    return KindExport(_transforms(C, 8, model.f, model.g), arrays, coding)


@exports(ChannelConditional)
def _channel(model: ChannelConditional, quality: float) -> KindExport:
    cfg = model.config
    N, M, S = cfg.N, cfg.M, cfg.slices
    C = M // S
    context = 2 * C if cfg.checkerboard else 0
    networks = _hyper_networks(model, "hyper-synthesis of z_hat * hyper_inverse_gain: "
                                      "(scales, means) predicted for y_s")
    for i in range(S):
        inputs = f"hyper (scales, means), y_hat of slices 0..{i - 1}" if i else "hyper"
        if cfg.checkerboard:
            inputs += ", the slice's context (zeros for the anchors)"
        networks.append(Network(
            f"slice_params_{i}", lambda t, net=model.slice_params[i]: net(t).chunk(2, 1),
            (Port("inputs", 2 * M + i * C + context, 16),),
            (Port("log_scale_factor", C, 16), Port("mean_offset", C, 16)),
            f"slice {i}'s entropy parameters, from the channel concatenation of [{inputs}]: "
            f"scales = hyper scales of the slice * exp(log_scale_factor), means = hyper means "
            f"of the slice + mean_offset"))
        if cfg.checkerboard:
            networks.append(Network(
                f"slice_context_{i}", model.slice_context[i], (Port("anchors", C, 16),),
                (Port("context", context, 16),),
                f"slice {i}'s checkerboard context: from its decoded y_hat at the anchors "
                f"(zeros elsewhere) to the non-anchors' context input of slice_params_{i}"))
        networks.append(Network(
            f"slice_lrp_{i}", lambda t, net=model.slice_lrp[i]: 0.5 * torch.tanh(net(t)),
            (Port("inputs", M + (i + 1) * C, 16),), (Port("residual", C, 16),),
            f"slice {i}'s latent residual prediction from the channel concatenation of [hyper "
            f"means, y_hat of slices 0..{i}] (slice {i}'s without it: symbols + means): added "
            f"to slice {i}'s y_hat"))
    q = torch.tensor([float(quality)])
    gain, _, hyper_gain, _ = (g.view(-1).numpy() for g in model.gains(q))
    _, inverse, _, hyper_inverse = (g.view(-1).numpy() for g in model.gains(q, torch.float64))
    arrays = {"z_medians": model.entropy_z.medians.float().numpy(),
              "scale_bounds": SCALES[:-1].copy(), "gain": gain, "hyper_gain": hyper_gain,
              "inverse_gain": inverse, "hyper_inverse_gain": hyper_inverse}
    halves = (" in two passes: the anchors (row + column even), then the rest, each in "
              "row-major order" if cfg.checkerboard else "")
    coding = {
        "passes": [
            {"symbols": "z", "shape": [N, "H/64", "W/64"], "stream": "whole, in stream 0",
             "value": "round(h_a(y * gain) * hyper_gain - z_medians[c])",
             "table": "c (the channel)"},
            {"symbols": f"y_s = y * gain, slice by slice ({S} of {C} channels){halves}",
             "shape": [C, "H/16", "W/16"], "stream": "split across the streams",
             "value": "round(y_s - means) of the slice's parameters",
             "table": f"{N} + the number of scale_bounds strictly below the scale"},
        ],
        "decode": ["z_hat = z symbols + z_medians[c]",
                   "hyper = h_s(z_hat * hyper_inverse_gain), (scales, means) concatenated",
                   "per slice: its parameters (slice_params, slice_context), y_hat = symbols + "
                   "means, plus slice_lrp's residual",
                   "x_hat = clamp(g_s(y_hat * inverse_gain), 0, 1)"],
        "quality": "the gains are this quality's; the networks serve every quality of the "
                   "model's range",
        "table_decisions": "the engine runs h_s and every slice network in float64; these "
                           "files are float32, so a scale next to a bound may land on the other "
                           "side and the engine's streams then do not decode: for bit-exact "
                           "decisions run them in float64",
    }
    return KindExport(networks, arrays, coding)


# --- the integer hyper-decoder, built as an ONNX graph of integer operators ---------------------


def integer_hyper_graph(integer: IntegerHyper, first_table: int) -> onnx.ModelProto:
    """`IntegerHyper` as ONNX, bit-exact: z_hat (B, N, h, w) float32 -> scales and means (B, M,
    4h, 4w) float64 (exact multiples of 2^-FRAC_BITS), and the table index of every y symbol,
    first_table + the number of thresholds below its scale (int32).

    ConvInteger (int8 x int8 -> int32, exact), the rescale and LeakyReLU in int64, and the
    arithmetic right shifts as floor divisions: (a - Mod(a, 2^k)) / 2^k, Mod taking the
    divisor's sign (ONNX has BitShift for unsigned integers only)."""
    nodes, inits = [], []

    def const(name: str, value: np.ndarray, kind: int) -> str:
        inits.append(helper.make_tensor(name, kind, value.shape, value.flatten().tolist()))
        return name

    def node(op: str, inputs: list[str], out: str, **attrs: object) -> str:
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def per_channel(name: str, values: Tensor) -> str:
        return const(name, values.long().numpy().reshape(1, -1, 1, 1), TensorProto.INT64)

    def floor_div(a: str, divisor: str, out: str) -> str:
        rest = node("Mod", [a, divisor], out + "_mod", fmod=0)
        return node("Div", [node("Sub", [a, rest], out + "_exact"), divisor], out)

    scale = np.array(2.0 ** int(integer.input_shift))
    v = node("Cast", ["z_hat"], "z64", to=TensorProto.DOUBLE)
    v = node("Round", [node("Mul", [v, const("in_scale", scale, TensorProto.DOUBLE)], "z_s")],
             "z_r")
    v = node("Clip", [v, const("lo", np.array(-128.0), TensorProto.DOUBLE),
                      const("hi", np.array(127.0), TensorProto.DOUBLE)], "z_c")
    v = node("Cast", [v], "v0", to=TensorProto.INT8)
    for i, layer in enumerate(integer.layers):
        p = f"l{i}_"
        w = layer.weight
        pad = w.shape[-1] // 2
        acc = node("ConvInteger", [v, const(p + "w", w.numpy(), TensorProto.INT8)], p + "acc",
                   pads=[pad] * 4)
        acc = node("Add", [node("Cast", [acc], p + "acc64", to=TensorProto.INT64),
                           per_channel(p + "bias", layer.bias)], p + "biased")
        t = node("Mul", [acc, per_channel(p + "mult", layer.mult)], p + "t")
        if layer.hidden:
            lrelu = node("Mul", [t, const(p + "slope", np.array(LRELU_NUM), TensorProto.INT64)],
                         p + "t41")
            lrelu = floor_div(lrelu, const(p + "slope_div", np.array(1 << LRELU_SHIFT),
                                           TensorProto.INT64), p + "lrelu")
            zero = const(p + "zero", np.array(0), TensorProto.INT64)
            t = node("Where", [node("GreaterOrEqual", [t, zero], p + "pos"), t, lrelu], p + "act")
        k = layer.shift.long()
        half = per_channel(p + "half", torch.ones_like(k) << (k - 1))
        out = floor_div(node("Add", [t, half], p + "t_half"),
                        per_channel(p + "step", torch.ones_like(k) << k), p + "out")
        if layer.hidden:
            out = node("Clip", [out, const(p + "lo", np.array(-128), TensorProto.INT64),
                                const(p + "hi", np.array(127), TensorProto.INT64)], p + "clip")
            out = node("Cast", [out], p + "int8", to=TensorProto.INT8)
            if int(layer.upscale) > 1:
                out = node("DepthToSpace", [out], p + "shuffled", blocksize=int(layer.upscale),
                           mode="CRD")
        v = out
    fixed = v  # (B, 2M, 4h, 4w) int64, units of 2^-FRAC_BITS
    nodes.append(helper.make_node("Split", [fixed], ["scales_fixed", "means_fixed"], axis=1,
                                  num_outputs=2))
    unit = const("unit", np.array(2.0**-FRAC_BITS), TensorProto.DOUBLE)
    for name in ("scales", "means"):
        node("Mul", [node("Cast", [f"{name}_fixed"], f"{name}_double", to=TensorProto.DOUBLE),
                     unit], name)
    # index = the number of thresholds strictly below the fixed-point scale, + first_table
    above = node("Greater", [node("Unsqueeze", ["scales_fixed", const("last", np.array([-1]),
                                                                      TensorProto.INT64)],
                                  "scales_5d"),
                             const("thresholds", integer.thresholds.numpy(), TensorProto.INT64)],
                 "above")
    count = node("ReduceSum", [node("Cast", [above], "above_int", to=TensorProto.INT32),
                               const("axis", np.array([-1]), TensorProto.INT64)], "count",
                 keepdims=0)
    node("Add", [count, const("first", np.array(first_table, dtype=np.int32), TensorProto.INT32)],
         "indexes")
    n = integer.layers[0].weight.shape[1]
    m = integer.layers[-1].weight.shape[0] // 2
    latent = ["B", None, "4*h", "4*w"]
    graph = helper.make_graph(
        nodes, "h_s_integer",
        [helper.make_tensor_value_info("z_hat", TensorProto.FLOAT, ["B", n, "h", "w"])],
        [helper.make_tensor_value_info(name, kind, [d if d else m for d in latent])
         for name, kind in (("scales", TensorProto.DOUBLE), ("means", TensorProto.DOUBLE),
                            ("indexes", TensorProto.INT32))],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="nicengine")
    onnx.checker.check_model(model)
    return model
