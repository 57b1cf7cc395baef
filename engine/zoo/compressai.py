"""Importing CompressAI checkpoints (Begaint et al., "CompressAI: a PyTorch library and evaluation
platform for end-to-end compression research", 2020) as engine weights files.

Architectures (`ARCHS`): bmshj2018-factorized, bmshj2018-hyperprior and mbt2018-mean, at any N
and M; and the transforms of cheng2020-anchor and cheng2020-attn (`cheng_layers`, loaded by
`convert_modules`). A checkpoint is a state_dict saved by torch.save, bare (as CompressAI's zoo
publishes them) or under "state_dict" (as its training example saves it, beside "epoch",
"optimizer", ...), with or without DataParallel's "module." prefix. It is read with
torch.load(weights_only=True): never unpickled beyond plain tensors and containers.

How CompressAI's tensors map onto the engine's model kinds:
- convolutions, GDN/IGDN beta and gamma (both store sqrt(value + 2^-36) and bound it below, as
  `engine.models.layers.GDN` does), the entropy bottleneck's matrices, biases, factors and
  quantiles ((C, 1, 3) -> (C, 3)): copied;
- the sub-pixel convolutions of cheng2020's transforms (conv3x3 then PixelShuffle): copied,
  the bias into SubpelConv's own;
- the ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1) layers of g_s and h_s: the
  equal sub-pixel convolutions (`subpel_from_deconv`), exact up to float rounding;
- derived coding state (`_quantized_cdf`, `_offset`, `_cdf_length`) is not read: the engine
  builds its CDF tables from the imported densities;
- constants (GDN pedestals and bounds, likelihood and scale bounds, the bottleneck's quantile
  targets, the Gaussian scale table) must be the ones the engine's layers use: CompressAI's
  defaults. Anything else, and every missing, misshapen or unknown tensor, is a ValueError
  naming the key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import format
from ..entropy.gaussian import LIKELIHOOD_MIN, SCALE_MIN, SCALES
from ..models import (
    CodingModel,
    ContextConfig,
    JointAutoregressive,
    MeanScaleHyperprior,
    ModelConfig,
)
from ..models.factorized_prior import FactorizedPrior
from ..models.layers import GDN
from ..models.scale_hyperprior import ScaleHyperprior
from .weights import companion, load_weights, save_integer_hyper, save_weights

# CompressAI's zoo lambdas of its MSE models, quality 1..8 (compressai/zoo/image.py).
ZOO_LAMBDAS = {1: 0.0018, 2: 0.0035, 3: 0.0067, 4: 0.0130, 5: 0.0250, 6: 0.0483, 7: 0.0932,
               8: 0.1800}

# Output phase a of the transposed convolution, input offset d - 1: its kernel tap a + 2 - 2(d - 1)
# (5 lies outside the 5x5 kernel: a zero tap).
_TAPS = torch.tensor([[4, 2, 0], [5, 3, 1]])


def subpel_from_deconv(weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:
    """The sub-pixel convolution equal to ConvTranspose2d(k=5, stride=2, padding=2,
    output_padding=1) with `weight` (C_in, C_out, 5, 5) and `bias` (C_out,): a 3x3 convolution
    weight (4 C_out, C_in, 3, 3) and bias (4 C_out,) whose output, pixel-shuffled by 2, is the
    transposed convolution's.

    Output pixel (2u + a, 2v + b) of the transposed convolution sums input pixels
    (u + dy, v + dx), dy, dx in {-1, 0, 1}, with kernel tap (a + 2 - 2 dy, b + 2 - 2 dx) where
    that lies inside the kernel: each of the 4 output phases (a, b) is a 3x3 correlation with
    zero padding, and F.pixel_shuffle takes channel 4c + 2a + b to phase (a, b) of channel c.
    """
    c_in, c_out = weight.shape[:2]
    padded = F.pad(weight, (0, 1, 0, 1))  # tap 5 reads zero
    sub = padded[:, :, _TAPS[:, None, :, None], _TAPS[None, :, None, :]]  # (in, out, a, b, dy, dx)
    return (sub.permute(1, 2, 3, 0, 4, 5).reshape(4 * c_out, c_in, 3, 3).contiguous(),
            bias.repeat_interleave(4))


# --- reading a checkpoint ----------------------------------------------------------------------

def read_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """(state_dict, record): the checkpoint's tensors, without a DataParallel "module." prefix,
    and its training record (the "epoch" beside a "state_dict" wrapper, if any)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as e:  # torch raises many types for foreign or damaged files
        text = str(e).strip()
        if "Weights only load failed" in text:
            refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            why = re.search(r"WeightsUnpickler error:\s*(.+)", text)
            detail = (f"it holds a {refused[1]} object" if refused
                      else why[1].strip() if why else "it holds more than tensors")
            raise ValueError(f"{path}: not a plain state_dict: torch.load(weights_only=True) "
                             f"refuses it ({detail})") from None
        detail = text.splitlines()[0] if text else type(e).__name__
        raise ValueError(f"{path}: not a PyTorch checkpoint ({detail})") from None
    record = {}
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        if isinstance(data.get("epoch"), int):
            record["epoch"] = data["epoch"]
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ValueError(f"{path}: holds a {type(data).__name__}, not a state_dict")
    for k, v in data.items():
        if not (isinstance(k, str) and isinstance(v, Tensor)):
            raise ValueError(f"{path}: not a state_dict: key {k!r} holds a {type(v).__name__}")
    if data and all(k.startswith("module.") for k in data):
        data = {k.removeprefix("module."): v for k, v in data.items()}
    return data, record


# --- mapping the tensors ----------------------------------------------------------------------

class _Checkpoint:
    """A checkpoint's tensors, each taken once with its shape checked; what is left at the end is
    unknown to the architecture. The first misshapen tensor is reported after the unknown keys
    (`misshapen`): a checkpoint of another architecture is told so rather than that a shape
    differs."""

    def __init__(self, state: Mapping[str, Tensor], arch: str, sizes: str) -> None:
        self.state, self.arch, self.sizes = state, arch, sizes  # sizes: "N=128, M=192"
        self.taken: set[str] = set()
        self.misshapen: str | None = None

    def take(self, key: str, shape: tuple[int, ...]) -> Tensor:
        if key not in self.state:
            raise ValueError(f"missing key {key}: a CompressAI {self.arch} checkpoint has it "
                             "(is the architecture right?)")
        t = self.state[key]
        self.taken.add(key)
        if tuple(t.shape) != tuple(shape):
            self.misshapen = self.misshapen or (
                f"{key} has shape {tuple(t.shape)}; a {self.arch} with {self.sizes} needs "
                f"{tuple(shape)}")
            return torch.zeros(shape)
        return t.detach().float().clone()

    def constant(self, key: str, expected: Tensor, what: str) -> None:
        """A constant buffer, if present, must hold `expected` (float32 rounding allowed)."""
        self.taken.add(key)
        t = self.state.get(key)
        if t is not None and (t.shape != expected.shape or not torch.allclose(
                t.double(), expected.double(), rtol=1e-5, atol=0)):
            raise ValueError(f"{key} is {t.flatten()[:4].tolist()}, not {what} "
                             f"{expected.flatten()[:4].tolist()} (CompressAI's default, which "
                             "the engine uses)")

    def skip(self, prefix: str, *names: str) -> None:
        """Tensors checked by the caller, or not read at all: the coding state CompressAI
        derives from the weights (update())."""
        self.taken.update(f"{prefix}.{n}" for n in names)


# A layer's converter: (checkpoint, CompressAI's layer name, our layer name, our model or the
# modules that hold our layer) -> our tensors.
Convert = Callable[[_Checkpoint, str, str, nn.Module], dict[str, Tensor]]
Layers = list[tuple[str, Convert, str]]  # (CompressAI's layer name, how, ours)
_DERIVED = ("_offset", "_quantized_cdf", "_cdf_length")


def _shape(model: nn.Module, key: str) -> tuple[int, ...]:
    return tuple(model.get_parameter(key).shape)


def _conv(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module) -> dict[str, Tensor]:
    return {f"{mine}.{p}": ckpt.take(f"{theirs}.{p}", _shape(model, f"{mine}.{p}"))
            for p in ("weight", "bias")}


def _deconv(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module) -> dict[str, Tensor]:
    c4, c_in = _shape(model, f"{mine}.conv.weight")[:2]
    weight = ckpt.take(f"{theirs}.weight", (c_in, c4 // 4, 5, 5))
    bias = ckpt.take(f"{theirs}.bias", (c4 // 4,))
    w, b = subpel_from_deconv(weight, bias)
    return {f"{mine}.conv.weight": w, f"{mine}.bias": b}


def _subpel(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module) -> dict[str, Tensor]:
    """A 3x3 convolution (CompressAI's conv3x3, or the one inside its subpel_conv3x3) -> our
    SubpelConv, which keeps the bias apart from the convolution (r = 1: no shuffle)."""
    return {f"{mine}.conv.weight": ckpt.take(f"{theirs}.weight",
                                             _shape(model, f"{mine}.conv.weight")),
            f"{mine}.bias": ckpt.take(f"{theirs}.bias", _shape(model, f"{mine}.bias"))}


def _gdn(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module) -> dict[str, Tensor]:
    """beta and gamma, whose effective values (reparametrised with the checkpoint's own pedestal
    and bound) must equal what the engine's GDN makes of them."""
    out = {f"{mine}.{p}": ckpt.take(f"{theirs}.{p}", _shape(model, f"{mine}.{p}"))
           for p in ("beta", "gamma")}
    probe = GDN(out[f"{mine}.beta"].numel())
    probe.load_state_dict({p: out[f"{mine}.{p}"] for p in ("beta", "gamma")})
    for p, ours in zip(("beta", "gamma"), probe.effective_params(), strict=True):
        pedestal = ckpt.state.get(f"{theirs}.{p}_reparam.pedestal")
        bound = ckpt.state.get(f"{theirs}.{p}_reparam.lower_bound.bound")
        ckpt.skip(f"{theirs}.{p}_reparam", "pedestal", "lower_bound.bound")
        if pedestal is None or bound is None:
            continue
        stored = out[f"{mine}.{p}"]
        theirs_effective = torch.maximum(stored, bound.float()) ** 2 - pedestal.float()
        if not torch.allclose(theirs_effective, ours, rtol=1e-5, atol=1e-12):
            raise ValueError(f"{theirs}.{p}_reparam: pedestal {pedestal.item():g} and bound "
                             f"{bound.item():g} differ from CompressAI's defaults, which the "
                             "engine's GDN uses")
    return out


def _density(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module) -> dict[str, Tensor]:
    density = model.get_submodule(mine)
    out = {}
    for name, p in density.named_parameters():
        if name == "quantiles":
            q = ckpt.take(f"{theirs}.quantiles", (p.shape[0], 1, 3))
            out[f"{mine}.quantiles"] = q.reshape(p.shape)
        else:
            out[f"{mine}.{name}"] = ckpt.take(f"{theirs}.{name}", tuple(p.shape))
    target = math.log(2 / density.tail_mass - 1)
    ckpt.constant(f"{theirs}.target", torch.tensor([-target, 0.0, target]),
                  f"the quantile targets of tail mass {density.tail_mass:g}")
    ckpt.constant(f"{theirs}.likelihood_lower_bound.bound",
                  torch.tensor([density.likelihood_bound]), "the likelihood bound")
    ckpt.skip(theirs, *_DERIVED)
    return out


def _gaussian(ckpt: _Checkpoint, theirs: str, mine: str, model: nn.Module
              ) -> dict[str, Tensor]:
    """No tensors: the engine's Gaussian conditional is CompressAI's default one."""
    for bound in ("scale_bound", "lower_bound_scale.bound"):
        ckpt.constant(f"{theirs}.{bound}", torch.tensor([SCALE_MIN]), "the scale bound")
    ckpt.constant(f"{theirs}.likelihood_lower_bound.bound", torch.tensor([LIKELIHOOD_MIN]),
                  "the likelihood bound")
    table = ckpt.state.get(f"{theirs}.scale_table")
    if table is not None and table.numel():  # empty until CompressAI's update()
        ckpt.constant(f"{theirs}.scale_table", torch.from_numpy(SCALES), "the scale table")
    ckpt.skip(theirs, "scale_table", *_DERIVED)
    return {}


def _transforms(rest: Layers) -> Layers:
    """g_a and g_s (the same in every architecture), then `rest`. CompressAI's g_s alternates
    transposed convolutions and IGDNs; each pair is one of our SubpelConv layers."""
    g_a = [(f"g_a.{i}", _gdn if i % 2 else _conv, f"g_a.{i}") for i in range(7)]
    g_s = [(f"g_s.{i}", _gdn if i % 2 else _deconv, f"g_s.{i // 2}" + (".igdn" if i % 2 else ""))
           for i in range(7)]
    return g_a + g_s + rest


def _masked_conv(ckpt: _Checkpoint, theirs: str, mine: str, model: CodingModel
                 ) -> dict[str, Tensor]:
    """The context convolution: weight and bias; its mask, if stored, must be mask A (what
    lies under the mask is kept, and ignored, as CompressAI's forward ignores it)."""
    ckpt.constant(f"{theirs}.mask", model.get_submodule(mine).mask.expand(
        _shape(model, f"{mine}.weight")), "mask A")
    return _conv(ckpt, theirs, mine, model)


_H_A = [(f"h_a.{i}", _conv, f"h_a.{i}") for i in (0, 2, 4)]
_MEAN_SCALE_HYPER = [*_H_A, ("h_s.0", _deconv, "h_s.0"), ("h_s.2", _deconv, "h_s.1"),
                     ("h_s.4", _conv, "h_s.2")]
_ENTROPY = [("entropy_bottleneck", _density, "entropy_z"),
            ("gaussian_conditional", _gaussian, "entropy_y")]
_CONTEXT = [("context_prediction", _masked_conv, "context_prediction"),
            *((f"entropy_parameters.{i}", _conv, f"entropy_parameters.{i}") for i in (0, 2, 4))]

# Cheng et al. 2020 (`engine.models.cheng`): our layers bear CompressAI's names, but for its
# subpel_conv3x3 (a Sequential: the convolution is `.0`) and h_s (SubpelConv layers, whose
# LeakyReLUs are fused, where CompressAI has separate modules).
def _same(block: str, convert: Convert, *names: str) -> Layers:
    return [(f"{block}.{n}", convert, f"{block}.{n}") for n in names]


def _residual(block: str) -> Layers:
    return _same(block, _conv, "conv1", "conv2")


def _residual_with_stride(block: str) -> Layers:
    return [*_same(block, _conv, "conv1", "conv2", "skip"), *_same(block, _gdn, "gdn")]


def _residual_upsample(block: str) -> Layers:
    return [(f"{block}.subpel_conv.0", _subpel, f"{block}.subpel_conv"),
            *_same(block, _conv, "conv"), *_same(block, _gdn, "igdn"),
            (f"{block}.upsample.0", _subpel, f"{block}.upsample")]


def _attention(block: str) -> Layers:
    units = [f"conv_{branch}.{i}.conv.{j}" for branch in "ab" for i in range(3) for j in (0, 2, 4)]
    return _same(block, _conv, *units, "conv_b.3")


def _plain_conv(block: str) -> Layers:
    return [(block, _conv, block)]


def _subpel_to_rgb(block: str) -> Layers:
    return [(f"{block}.0", _subpel, block)]


def cheng_layers(attention: bool) -> Layers:
    """The layers of cheng2020-anchor's (or with `attention`, cheng2020-attn's) g_a, g_s, h_a and
    h_s: (CompressAI's name, how, ours), for `engine.models.cheng`'s ChengAnalysis,
    ChengSynthesis and cheng_hyper_transforms under the names g_a, g_s, h_a, h_s."""
    attend = [_attention] if attention else []
    g_a = [_residual_with_stride, _residual, _residual_with_stride, *attend, _residual,
           _residual_with_stride, _residual, _plain_conv, *attend]
    g_s = [*attend, _residual, _residual_upsample, _residual, _residual_upsample, *attend,
           _residual, _residual_upsample, _residual, _subpel_to_rgb]
    h_a = [(f"h_a.{i}", _conv, f"h_a.{i}") for i in range(0, 9, 2)]
    # CompressAI's h_s: conv3x3, subpel_conv3x3, conv3x3, subpel_conv3x3 (each with a LeakyReLU
    # after it), conv3x3.
    h_s = [(f"h_s.{2 * i}" + (".0" if i % 2 else ""), _subpel, f"h_s.{i}") for i in range(4)]
    return [*(layer for transform, blocks in (("g_a", g_a), ("g_s", g_s))
              for i, block in enumerate(blocks) for layer in block(f"{transform}.{i}")),
            *h_a, *h_s, ("h_s.8", _conv, "h_s.4")]


# CompressAI's architecture name -> (our model kind, its layers: (CompressAI's, how, ours)).
ARCHS: dict[str, tuple[type[CodingModel], Layers]] = {
    "bmshj2018-factorized": (FactorizedPrior, _transforms(
        [("entropy_bottleneck", _density, "entropy_y")])),
    "bmshj2018-hyperprior": (ScaleHyperprior, _transforms(
        [*_H_A, ("h_s.0", _deconv, "h_s.0"), ("h_s.2", _deconv, "h_s.2"),
         ("h_s.4", _conv, "h_s.4"), ("entropy_bottleneck", _density, "entropy_z"),
         ("gaussian_conditional", _gaussian, "entropy_y")])),
    "mbt2018-mean": (MeanScaleHyperprior, _transforms([*_MEAN_SCALE_HYPER, *_ENTROPY])),
    "mbt2018": (JointAutoregressive, _transforms([*_MEAN_SCALE_HYPER, *_CONTEXT, *_ENTROPY])),
    "cheng2020-anchor": (JointAutoregressive, [*cheng_layers(False), *_CONTEXT, *_ENTROPY]),
    "cheng2020-attn": (JointAutoregressive, [*cheng_layers(True), *_CONTEXT, *_ENTROPY]),
}
# Where N and M are read: the first and the last convolution of g_a (Cheng et al.'s have M = N).
_SIZE_KEYS = {arch: ("g_a.0.conv1.weight",) * 2 if arch.startswith("cheng") else
              ("g_a.0.weight", "g_a.6.weight") for arch in ARCHS}

# Older CompressAI names of the entropy bottleneck's parameters (`_matrices.0` in the published
# zoo weights, `_matrix0` in some versions) -> the current ones (`matrices.0`).
_OLD_NAMES = re.compile(r"^(.*entropy_bottleneck\.)(?:_(matrices|biases|factors)\.|"
                        r"_(matrix|bias|factor))(\d+)$")
_PLURAL = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def _current_name(key: str) -> str:
    m = _OLD_NAMES.match(key)
    if m is None:
        return key
    return f"{m[1]}{m[2] or _PLURAL[m[3]]}.{m[4]}"


def convert_state_dict(state: Mapping[str, Tensor], arch: str) -> CodingModel:
    """A CompressAI state_dict of architecture `arch` -> the equal engine model (eval mode, no
    gradients, `info` unset). ValueError naming the first missing, misshapen or unknown key."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; supported: {', '.join(ARCHS)}")
    kind, layers = ARCHS[arch]
    state = {_current_name(k): v for k, v in state.items()}
    for key in _SIZE_KEYS[arch]:
        if key not in state or state[key].dim() != 4:
            raise ValueError(f"missing key {key}: a CompressAI {arch} checkpoint has it")
    N, M = (state[key].shape[0] for key in _SIZE_KEYS[arch])
    config = (ContextConfig(N, M, transforms=arch) if kind is JointAutoregressive
              else ModelConfig(N, M))
    model = kind(config)
    ckpt = _Checkpoint(state, arch, f"N={config.N}, M={config.M}")
    model.load_state_dict(_convert(ckpt, layers, model, state))  # strict: all from the layers
    return model.eval().requires_grad_(False)


def convert_modules(state: Mapping[str, Tensor], layers: Layers, modules: nn.Module, arch: str,
                    sizes: str) -> None:
    """Load `layers` of a CompressAI `arch` state_dict into `modules`: our layers under our
    names and nothing else (say an nn.ModuleDict of some transforms; loaded strictly). Only the
    keys in the layers' top-level modules (g_a, h_s, ...) are read; ValueError naming the first
    missing, misshapen or unknown one. `sizes` ("N=192") goes into messages."""
    tops = {theirs.split(".")[0] for theirs, _, _ in layers}
    ckpt = _Checkpoint(state, arch, sizes)
    modules.load_state_dict(_convert(ckpt, layers, modules,
                                     [k for k in state if k.split(".")[0] in tops]))


def _convert(ckpt: _Checkpoint, layers: Layers, model: nn.Module, keys: Iterable[str]
             ) -> dict[str, Tensor]:
    """Our tensors of `layers`; ValueError unless they take every one of `keys` (the
    checkpoint's that must be known) with its shape. Loaded strictly, they fill `model`."""
    ours: dict[str, Tensor] = {}
    for theirs, convert, mine in layers:
        ours.update(convert(ckpt, theirs, mine, model))
    unknown = [k for k in keys if k not in ckpt.taken]
    if unknown:
        raise ValueError(f"unknown key {unknown[0]} ({len(unknown)} in all) is not part of a "
                         f"CompressAI {ckpt.arch} (is the architecture right?)")
    if ckpt.misshapen:
        raise ValueError(ckpt.misshapen)
    return ours


def training_lambda(quality: float | None, lam: float | None) -> tuple[float | None, str]:
    """(lambda, where it comes from): `lam` if given, else CompressAI's zoo lambda (MSE) of an
    integer `quality` 1..8, else None (refinement then needs Refine(lam=...))."""
    if lam is not None:
        if not lam > 0:
            raise ValueError(f"lambda must be positive, not {lam}")
        return lam, "given"
    if quality in ZOO_LAMBDAS:
        return ZOO_LAMBDAS[int(quality)], f"CompressAI's zoo lambda of MSE quality {quality:g}"
    return None, "unknown"


def import_compressai(checkpoint: str | Path, out: str | Path, arch: str,
                      quality: float | None = None, lam: float | None = None,
                      storage: str = "float32") -> CodingModel:
    """Import a CompressAI checkpoint of architecture `arch` (a key of ARCHS) into the weights
    file `out`, which `engine.Codec(weights=out)` and the CLI's --weights load; returns the model
    loaded from it. `quality` goes into streams' headers and the file's record; `lam` is the
    training lambda refinement needs (default: see `training_lambda`). `storage`: see
    `engine.zoo.save_weights`."""
    if quality is not None:
        format.quality_code(quality)  # ValueError unless a header can hold it
    lam, lam_source = training_lambda(quality, lam)
    state, record = read_checkpoint(checkpoint)
    model = convert_state_dict(state, arch)
    save_weights(model, out, storage, source="CompressAI", compressai_arch=arch,
                 checkpoint=Path(checkpoint).name, quality=quality or 0, **{"lambda": lam},
                 lambda_source=lam_source, **record)
    if isinstance(model, JointAutoregressive):  # it codes only with its integer context model
        saved = load_weights(out)
        save_integer_hyper(saved.calibrate(calibration_images()), saved,
                           companion(out, "integer_hyper"))
    return load_weights(out)


def calibration_images() -> Tensor:
    """What integer context models are calibrated on: three photos that scikit-image ships
    (astronaut, coffee, chelsea), 256x384 centre crops, (3, 3, 256, 384) in [0, 1]. Never
    Kodak; the same on every machine."""
    from skimage import data

    crops = []
    for photo in (data.astronaut(), data.coffee(), data.chelsea()):
        x = torch.from_numpy(photo).permute(2, 0, 1).float() / 255
        top, left = (x.shape[1] - 256) // 2, (x.shape[2] - 384) // 2
        crops.append(x[:, top : top + 256, left : left + 384])
    return torch.stack(crops)
