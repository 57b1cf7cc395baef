"""Quantization rectifier (Luo, Chen, "Neural image compression with quantization rectifier",
arXiv 2403.17236, 2024): a decoder-side network that predicts the unquantized latent y from the
quantized y_hat, using the spatial correlation of the latents, before the synthesis transform.

    y_hat, means, scales (B, M, h, w) each --Rectifier--> y_tilde = y_hat + r(...) (B, M, h, w)
    y_tilde --g_s (fine-tuned with the rectifier)--> x_hat (B, 3, 16h, 16w)

r: conv3x3 over (y_hat - means, means, log scales) -> residual blocks -> an attention block
(the simplified attention module of Cheng, Sun, Takeuchi, Katto, CVPR 2020) -> conv3x3, whose
weights start at zero, so an untrained rectifier is the identity. It runs at latent resolution
(1/16 of the image's side), so it costs little next to g_s. The decoder knows the means and
scales of the entropy model (it needed them to decode), so the rectifier may use them too.

Soft-to-predictive training (`engine.train.rectify`) freezes the encoder and hard quantization:
the symbols, and so the streams, do not change; a model's `RectifiedDecoder` (rectifier and its
own g_s, of the model's synthesis architecture) is a second decoder of the same streams, kept in
a companion file beside the weights. Its ablation, `decoder_only`, has no rectifier: g_s alone
fine-tuned on the rounded latents by the same phase 2.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .cheng import ChengSynthesis
from .layers import conv, leaky_relu
from .transforms import Synthesis

if TYPE_CHECKING:
    from .base import CodingModel

LOG_SCALE_FLOOR = 1e-3  # scales below this are one table anyway; keeps log finite
# The synthesis transforms a rectified decoder may end in, by name: (N, M) -> g_s.
SYNTHESES = {"balle": Synthesis,
             "cheng2020-anchor": lambda N, M: ChengSynthesis(N, attention=False),
             "cheng2020-attn": lambda N, M: ChengSynthesis(N, attention=True)}


def synthesis_name(g_s: nn.Module) -> str:
    """The `SYNTHESES` name of a model's g_s."""
    if isinstance(g_s, ChengSynthesis):
        return "cheng2020-attn" if g_s.attention else "cheng2020-anchor"
    if isinstance(g_s, Synthesis):
        return "balle"
    raise ValueError(f"no rectified decoder ends in a {type(g_s).__name__}")


@dataclass(frozen=True)
class RectifierConfig:
    """Architecture of a rectified decoder; stored in its companion file. `decoder_only`: no
    rectifier, g_s alone (phase 2's ablation)."""

    N: int  # the synthesis transform's width
    M: int  # latent channels
    width: int = 128
    blocks: int = 3
    synthesis: str = "balle"  # a key of SYNTHESES
    decoder_only: bool = False

    def __post_init__(self) -> None:
        if self.synthesis not in SYNTHESES:
            raise ValueError(f"synthesis must be one of {sorted(SYNTHESES)}, not "
                             f"{self.synthesis!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class ResidualBlock(nn.Module):
    """x + conv3x3(lrelu(conv3x3(x))), shape-preserving (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = conv(channels, channels, 3, 1)
        self.conv2 = conv(channels, channels, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(leaky_relu(self.conv1(x)))


class BottleneckUnit(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(conv1x1(x))))) at half width, then ReLU (Cheng et al.)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.body = nn.Sequential(conv(channels, half, 1, 1), nn.ReLU(), conv(half, half, 3, 1),
                                  nn.ReLU(), conv(half, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x + self.body(x))


class AttentionBlock(nn.Module):
    """x + trunk(x) * sigmoid(mask(x)): three bottleneck units in each branch, the mask ending
    in a 1x1 convolution (Cheng et al., CVPR 2020, simplified attention module). (B, C, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*(BottleneckUnit(channels) for _ in range(3)))
        self.mask = nn.Sequential(*(BottleneckUnit(channels) for _ in range(3)),
                                  conv(channels, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.trunk(x) * torch.sigmoid(self.mask(x))


class Rectifier(nn.Module):
    """(y_hat, means, scales), each (B, M, h, w) -> the predicted unquantized y (B, M, h, w)."""

    def __init__(self, M: int, width: int = 128, blocks: int = 3) -> None:
        super().__init__()
        self.head = conv(3 * M, width, 3, 1)
        self.body = nn.Sequential(*(ResidualBlock(width) for _ in range(blocks)),
                                  AttentionBlock(width))
        self.tail = conv(width, M, 3, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, y_hat: Tensor, means: Tensor, scales: Tensor) -> Tensor:
        side = torch.cat([y_hat - means, means, scales.clamp_min(LOG_SCALE_FLOOR).log()], 1)
        return y_hat + self.tail(self.body(leaky_relu(self.head(side))))


class RectifiedDecoder(nn.Module):
    """The second decoder of a model's streams: the rectifier (None when `decoder_only`) and a
    synthesis transform trained with it. (y_hat, means, scales) (B, M, h, w) -> x_hat
    (B, 3, 16h, 16w)."""

    def __init__(self, config: RectifierConfig) -> None:
        super().__init__()
        self.config = config
        self.rectifier = (None if config.decoder_only
                          else Rectifier(config.M, config.width, config.blocks))
        self.g_s = SYNTHESES[config.synthesis](config.N, config.M)

    @classmethod
    def of(cls, model: CodingModel, width: int = 128, blocks: int = 3,
           decoder_only: bool = False) -> RectifiedDecoder:
        """A rectified decoder for `model` (a RECTIFIABLE kind), its rectifier the identity and
        its g_s a copy of the model's."""
        config = RectifierConfig(model.config.N, model.config.M, width, blocks,
                                 synthesis_name(model.g_s), decoder_only)
        decoder = cls(config)
        decoder.g_s.load_state_dict(model.g_s.state_dict())
        return decoder

    def rectify(self, y_hat: Tensor, means: Tensor, scales: Tensor) -> Tensor:
        """What g_s decodes: the rectifier's prediction of y (y_hat itself when decoder-only)."""
        return y_hat if self.rectifier is None else self.rectifier(y_hat, means, scales)

    def forward(self, y_hat: Tensor, means: Tensor, scales: Tensor) -> Tensor:
        """Training: x_hat unclamped."""
        return self.g_s(self.rectify(y_hat, means, scales))

    def synthesize(self, y_hat: Tensor, means: Tensor, scales: Tensor) -> Tensor:
        """The decoder's image, float32, clamped to [0, 1]; the rectifier runs in float32 (it
        is small), g_s as the model's own does (`synthesize` of its transform)."""
        with torch.autocast(y_hat.device.type, enabled=False):
            y_tilde = self.rectify(y_hat.float(), means.float(), scales.float())
        return self.g_s.synthesize(y_tilde)
