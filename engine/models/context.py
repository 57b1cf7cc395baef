"""Joint autoregressive and hierarchical priors (Minnen, Balle, Toderici, NeurIPS 2018):
CompressAI's mbt2018, and with Cheng et al.'s transforms (CVPR 2020, `engine.models.cheng`) its
cheng2020-anchor and cheng2020-attn.

    x (B, 3, H, W) --g_a--> y (B, M, H/16, W/16) --h_a--> z (B, N, H/64, W/64)
    z_hat --h_s--> params (B, 2M, H/16, W/16)
    (params, context(y_hat) over a 5x5 mask-A window) --entropy_parameters (1x1)--> (scales, means)
    y_hat = round(y - means) + means --g_s--> x_hat (B, 3, H, W)

Every table and mean depends on earlier symbols, so coding is serial. It runs in wavefront
order (`engine.models.integer_context.Wavefront`): W + 3(H-1) coding passes after z, each
decoding every position with the same w + 3h at once, instead of CompressAI's H*W steps. h_s,
the context and the entropy parameters run on exact integers (`IntegerContext`, the weights'
`NAME.int.safetensors` companion, made when importing): a stream decodes to the same symbols on
every machine, thread count, batch size and device. Pass k > 0 holds step k-1's symbols, (M, 1,
P) in channel-major order. A quantization rectifier (`engine.models.rectifier`) gets the means
and scales of every position from one pass over the decoded wavefront (`decoded_params`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy.cdf import CdfTables
from ..entropy.factorized import FactorizedDensity
from ..entropy.gaussian import GaussianConditional, scale_bounds
from ..errors import CodecError
from .base import CodingModel, Decoding, Encoded, Latents, Quantizer
from .cheng import HYPER_SYNTHESIS_HALO, ChengAnalysis, ChengSynthesis, cheng_hyper_transforms
from .hyperprior import LeakyReLU, MeanScaleHyperprior
from .integer_context import CONTEXT_PAD, IntegerContext, Wavefront, wavefront_counts
from .integer_hyper import to_real
from .strips import HALO, in_strips
from .transforms import Analysis, Synthesis

TRANSFORMS = ("mbt2018", "cheng2020-anchor", "cheng2020-attn")  # a config names one


@dataclass(frozen=True)
class ContextConfig:
    """Architecture of a joint autoregressive model; stored in every weights file.
    `transforms`: whose g_a, g_s, h_a and h_s (CompressAI's architecture name)."""

    N: int = 192
    M: int = 192
    transforms: str = "mbt2018"

    def __post_init__(self) -> None:
        if self.transforms not in TRANSFORMS:
            raise ValueError(f"transforms must be one of {TRANSFORMS}, not {self.transforms!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class MaskedConv(nn.Conv2d):
    """The 5x5 context convolution over y_hat (B, M, h, w) -> (B, 2M, h, w) that sees only the
    positions decoded before the centre (mask A: the two rows above, and the two positions to
    the left). The weight keeps whatever lies under the mask; forward ignores it."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(c_in, c_out, 5, padding=CONTEXT_PAD)
        mask = torch.ones(5, 5)
        mask[2, 2:] = 0
        mask[3:] = 0
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight * self.mask

    def forward(self, y_hat: Tensor) -> Tensor:
        return F.conv2d(y_hat, self.masked_weight(), self.bias, padding=CONTEXT_PAD)


class JointAutoregressive(CodingModel):
    """The transforms, hyper-transforms, context model, entropy parameters and both entropy
    models. Layer names are CompressAI's where its checkpoints map onto them
    (`engine.zoo.compressai`)."""

    ARCH = "joint_autoregressive"
    KIND_ID = 6
    CONFIG = ContextConfig
    INTEGER_HYPER = True
    RECTIFIABLE = True

    def __init__(self, config: ContextConfig = ContextConfig()) -> None:
        super().__init__()
        self.config = config
        N, M = config.N, config.M
        if config.transforms == "mbt2018":
            self.g_a, self.g_s = Analysis(N, M), Synthesis(N, M)
            self.h_a, self.h_s = MeanScaleHyperprior.hyper_transforms(N, M)
            self.hyper_halo = HALO
        else:  # Cheng et al.'s, where M = N
            if M != N:
                raise ValueError(f"{config.transforms} has M = N, not N={N}, M={M}")
            attention = config.transforms == "cheng2020-attn"
            self.g_a, self.g_s = ChengAnalysis(N, attention), ChengSynthesis(N, attention)
            self.h_a, self.h_s = cheng_hyper_transforms(N)
            self.hyper_halo = HYPER_SYNTHESIS_HALO
        self.context_prediction = MaskedConv(M, 2 * M)
        self.entropy_parameters = nn.Sequential(
            nn.Conv2d(M * 12 // 3, M * 10 // 3, 1), LeakyReLU(),
            nn.Conv2d(M * 10 // 3, M * 8 // 3, 1), LeakyReLU(),
            nn.Conv2d(M * 8 // 3, M * 6 // 3, 1))
        self.entropy_z = FactorizedDensity(N)
        self.entropy_y = GaussianConditional()

    @classmethod
    def integer_from_state(cls, state: dict[str, Tensor]) -> IntegerContext:
        return IntegerContext.from_state(state)

    def float_params(self, z_hat: Tensor, y_hat: Tensor) -> tuple[Tensor, Tensor]:
        """(scales, means) (B, M, h, w) of the float networks, given all of y_hat at once
        (training's parallel form; what `calibrate` and refinement use)."""
        ctx = self.context_prediction(y_hat)
        return self.entropy_parameters(torch.cat([self.h_s(z_hat), ctx], dim=1)).chunk(2, 1)

    # --- the coding interface (engine.models.base) --------------------------------------------

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        hp, wp = self.padded(height), self.padded(width)
        M = self.config.M
        return [(self.config.N, hp // 64, wp // 64),
                *((M, 1, n) for n in wavefront_counts(hp // 16, wp // 16))]

    def analyze(self, x: Tensor) -> Latents:
        """x (B, 3, H, W) -> (y, z), both float32 (h_a never under autocast)."""
        y = self.g_a.analyze(x)
        with torch.autocast(x.device.type, enabled=False):
            return y, self.h_a(y)

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        return self._code(*latents)[0]

    def decoder_latents(self, latents: Latents) -> tuple[Tensor, Tensor, Tensor]:
        """(y_hat, means, scales float64) as the decoder has them: the integer wavefront's."""
        wave = self._code(*latents)[1]
        scales, means = wave.decoded_params()
        return wave.y_hat(), to_real(means), to_real(scales)

    def _code(self, y: Tensor, z: Tensor) -> tuple[Encoded, Wavefront]:
        """The coding passes of (y, z), and the wavefront that coded them."""
        z_sym = self.entropy_z.symbols(z)
        z_hat = self.entropy_z.dequantize(z_sym)
        wave = self._wavefront(z_hat)
        bounds = self._integer().scale_bounds(z.device)
        symbols, indexes = [z_sym.flatten(1)], [
            self.entropy_z.indexes(z_sym.shape[1:], z.device).expand(y.shape[0], -1)]
        bits = -torch.log2(self.entropy_z.likelihood(z_hat)).flatten(1).sum(1).double()
        for t in range(wave.steps):
            idx, scales, means = wave.step(t)  # the decoder's indexes, from the same integers
            rows, cols = wave.positions(t)
            sym, step_bits, _ = self.entropy_y.quantize(
                y[:, :, rows, cols], to_real(scales), to_real(means), bounds)
            wave.put(t, sym, means)
            symbols.append(sym.flatten(1))
            indexes.append(idx.flatten(1) + self.config.N)
            bits += step_bits.double()
        return Encoded(symbols=symbols, indexes=indexes, bits=bits, integer=True), wave

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False
               ) -> Decoding:
        if not integer:
            raise CodecError("a joint autoregressive stream must be coded with its integer "
                             "context model (the header lacks the INTEGER flag)")
        z_shape = self.pass_shapes(height, width)[0]
        z_sym = yield self.entropy_z.indexes(z_shape, device).expand(batch, -1)
        z_hat = self.entropy_z.dequantize(z_sym.to(device).view(batch, *z_shape))
        wave = self._wavefront(z_hat)
        for t in range(wave.steps):
            idx, _, means = wave.step(t)
            sym = yield idx.flatten(1) + self.config.N
            wave.put(t, sym.to(device).view(means.shape), means)
        if rectify:  # the codec checked that there is a rectifier
            scales, means = wave.decoded_params()
            return self.rectifier.synthesize(wave.y_hat(), to_real(means), to_real(scales))
        return self.synthesize(wave.y_hat())

    def tables(self) -> CdfTables:
        """z's per-channel tables first, then the Gaussian scale tables, stored as integers
        with the integer context model."""
        return self._integer().tables()

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        """The context sees quantize(y); the means it predicts then centre y's quantization, as
        coding centres round(y - means) on the decoded neighbours' means."""
        y, z = latents
        med = self.entropy_z.medians.view(1, -1, 1, 1)
        z_t = quantize(z - med) + med
        scales, means = self.float_params(z_t, quantize(y))
        y_t = quantize(y - means) + means
        likelihoods = [self.entropy_y.likelihood(y_t, scales, means),
                       self.entropy_z.likelihood(z_t)]
        return self.g_s(y_t), likelihoods

    def invalidate(self) -> None:
        super().invalidate()
        self.entropy_z.invalidate()

    # --- calibration ----------------------------------------------------------------------

    @torch.no_grad()
    def calibrate(self, images: Tensor) -> IntegerContext:
        """The integer context model of these weights, its activation exponents set on
        `images` (B, 3, H, W) in [0, 1], H and W multiples of ALIGN (no training)."""
        y = self.g_a(images)
        z_hat = self.entropy_z.dequantize(self.entropy_z.symbols(self.h_a(y)))
        _, means = self.float_params(z_hat, torch.round(y))
        y_hat = torch.round(y - means) + means
        tables = CdfTables.concat(self.entropy_z.tables(), self.entropy_y.tables())
        return IntegerContext.build(
            self.h_s, self.context_prediction.masked_weight(), self.context_prediction.bias,
            self.entropy_parameters, z_hat, y_hat, scale_bounds(z_hat.double().cpu()), tables)

    # --- the pieces -------------------------------------------------------------------------

    def _integer(self) -> IntegerContext:
        if self.integer_hyper is None:
            raise ValueError("these joint autoregressive weights have no integer context model "
                             "(the companion NAME.int.safetensors that python -m engine.zoo "
                             "import-compressai writes), and code only with one")
        return self.integer_hyper

    def _wavefront(self, z_hat: Tensor) -> Wavefront:
        """The wavefront decoding state of these images, from h_s in integers (in strips)."""
        net = self._integer()
        params = in_strips(lambda z: net(z).float(), z_hat, 1, 4, 2 * self.config.M,
                           unit_rows=64, halo=self.hyper_halo)  # int8 values, exact in float32
        return net.wavefront(params.to(torch.int8))

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """y_hat (B, M, h, w) -> x_hat (B, 3, 16h, 16w) float32, clamped to [0, 1]."""
        return self.g_s.synthesize(y_hat)
