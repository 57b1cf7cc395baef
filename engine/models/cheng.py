"""The transforms of Cheng, Sun, Takeuchi, Katto, "Learned Image Compression with Discretized
Gaussian Mixture Likelihoods and Attention Modules", CVPR 2020, as CompressAI builds them
(`cheng2020-anchor`, and `cheng2020-attn` with attention blocks), so that its checkpoints convert
tensor for tensor (`engine.zoo.compressai.cheng_layers`; our layer names are CompressAI's).

    x (B, 3, H, W) --g_a--> y (B, N, H/16, W/16) --h_a--> z (B, N, H/64, W/64)
    z_hat --h_s--> (B, 2N, H/16, W/16)                 (the context model's hyper input)
    y_hat --g_s--> x_hat (B, 3, H, W)

Residual blocks of 3x3 convolutions replace the 5x5 convolutions of Balle's transforms; the
synthesis upsamples with sub-pixel convolutions (Shi et al., CVPR 2016). When coding, g_a and
g_s run in horizontal strips on large images with the halos below, may run under autocast
(`engine.precision`), and return float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import precision
from .hyperprior import LeakyReLU
from .layers import GDN, SubpelConv, conv, leaky_relu
from .strips import in_strips

# Latent rows of context each transform needs around a strip (`in_strips`; the shared
# transforms' HALO is too small): its receptive radius, counted back through every 3x3
# convolution (radius r at one scale is 2r + 1 at the finer one), in whole latent rows.
# tests/test_cheng.py checks each is exact: one latent row's gradient reaches the halo's
# outermost row and no further. Halos cost compute: an image 4096 pixels wide runs in strips of
# 32 latent rows (strips.TILE_PIXELS), for which the attention synthesis computes 54.
ANALYSIS_HALO = {False: 4, True: 8}  # by attention: 57 and 117 image rows
SYNTHESIS_HALO = {False: 7, True: 11}  # by attention
HYPER_SYNTHESIS_HALO = 4  # rows of z_hat, for h_s in float or in integers


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return conv(c_in, c_out, 3, stride)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions, each followed by a LeakyReLU, plus the input.
    (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(channels, channels)
        self.conv2 = _conv3x3(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return leaky_relu(self.conv2(leaky_relu(self.conv1(x)))) + x


class ResidualBlockWithStride(nn.Module):
    """The analysis' downsampling residual block: 3x3 stride-2 convolution, LeakyReLU, 3x3
    convolution, GDN, plus a 1x1 stride-2 convolution of the input.
    (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride=2)
        self.conv2 = _conv3x3(c_out, c_out)
        self.gdn = GDN(c_out)
        self.skip = conv(c_in, c_out, 1, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.gdn(self.conv2(leaky_relu(self.conv1(x)))) + self.skip(x)


class ResidualBlockUpsample(nn.Module):
    """The synthesis' upsampling residual block: sub-pixel convolution (x2) with LeakyReLU, 3x3
    convolution, IGDN, plus a second sub-pixel convolution of the input.
    (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.subpel_conv = SubpelConv(c_in, c_out, act="lrelu")
        self.conv = _conv3x3(c_out, c_out)
        self.igdn = GDN(c_out, inverse=True)
        self.upsample = SubpelConv(c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.igdn(self.conv(self.subpel_conv(x))) + self.upsample(x)


class ResidualUnit(nn.Module):
    """The attention block's unit: 1x1 convolution to C/2 channels, ReLU, 3x3 convolution, ReLU,
    1x1 convolution back to C, plus the input, then ReLU. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(conv(channels, half, 1, 1), nn.ReLU(), _conv3x3(half, half),
                                  nn.ReLU(), conv(half, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x) + x)


class AttentionBlock(nn.Module):
    """Cheng et al.'s simplified attention module (CompressAI's: without the non-local
    block): a trunk of three residual units, weighted by the sigmoid of a mask branch (three
    units and a 1x1 convolution), plus the input. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_a = nn.Sequential(*(ResidualUnit(channels) for _ in range(3)))
        self.conv_b = nn.Sequential(*(ResidualUnit(channels) for _ in range(3)),
                                    conv(channels, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_a(x) * torch.sigmoid(self.conv_b(x)) + x


class ChengAnalysis(nn.Sequential):
    """g_a: x (B, 3, H, W) -> y (B, N, H/16, W/16); H and W multiples of 16. Three residual
    stages that halve the size, a 3x3 stride-2 convolution; with `attention`, attention blocks
    at 1/4 scale and at the end."""

    def __init__(self, N: int, attention: bool) -> None:
        stages = [ResidualBlockWithStride(3, N), ResidualBlock(N),
                  ResidualBlockWithStride(N, N), *([AttentionBlock(N)] if attention else []),
                  ResidualBlock(N), ResidualBlockWithStride(N, N), ResidualBlock(N),
                  _conv3x3(N, N, stride=2), *([AttentionBlock(N)] if attention else [])]
        super().__init__(*stages)
        self.N, self.halo = N, ANALYSIS_HALO[attention]

    def analyze(self, x: Tensor) -> Tensor:
        """The coding path's y, float32."""
        with precision.transform(x) as x:
            return in_strips(self, x, 16, 1, self.N, halo=self.halo).float()


class ChengSynthesis(nn.Sequential):
    """g_s: y_hat (B, N, h, w) -> x_hat (B, 3, 16h, 16w). Residual blocks and three upsampling
    residual blocks, then a sub-pixel convolution to RGB; with `attention`, attention blocks at
    the start and at 1/4 scale."""

    def __init__(self, N: int, attention: bool) -> None:
        stages = [*([AttentionBlock(N)] if attention else []), ResidualBlock(N),
                  ResidualBlockUpsample(N, N), ResidualBlock(N), ResidualBlockUpsample(N, N),
                  *([AttentionBlock(N)] if attention else []), ResidualBlock(N),
                  ResidualBlockUpsample(N, N), ResidualBlock(N), SubpelConv(N, 3)]
        super().__init__(*stages)
        self.attention, self.halo = attention, SYNTHESIS_HALO[attention]

    def synthesize(self, y_hat: Tensor) -> Tensor:
        """The decoder's image, float32, clamped to [0, 1]."""
        with precision.transform(y_hat) as y_hat:
            return in_strips(self._pixels, y_hat, 1, 16, 3, halo=self.halo).clamp_(0, 1)

    def _pixels(self, y_hat: Tensor) -> Tensor:
        """Every layer but the last may run under autocast; the last one's rounding goes straight
        into the pixels (as in `transforms.Synthesis`)."""
        *layers, last = self
        for layer in layers:
            y_hat = layer(y_hat)
        with torch.autocast(y_hat.device.type, enabled=False):
            return last(y_hat.float())


def cheng_hyper_transforms(N: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(h_a: y (B, N, h, w) -> z (B, N, h/4, w/4), h_s: z_hat (B, N, h/4, w/4) -> (B, 2N, h, w)).

    h_a: five 3x3 convolutions (strides 1, 1, 2, 1, 2) with LeakyReLUs between. h_s: CompressAI's
    3x3 convolutions and sub-pixel convolutions with LeakyReLU, as SubpelConv layers (r = 1 for a
    plain convolution), then a 3x3 convolution: the form the integer hyper-decoder
    (`engine.models.integer_hyper`) takes."""
    h_a = nn.Sequential(_conv3x3(N, N), LeakyReLU(), _conv3x3(N, N), LeakyReLU(),
                        _conv3x3(N, N, stride=2), LeakyReLU(), _conv3x3(N, N), LeakyReLU(),
                        _conv3x3(N, N, stride=2))
    wide = 3 * N // 2
    h_s = nn.Sequential(SubpelConv(N, N, r=1, act="lrelu"), SubpelConv(N, N, act="lrelu"),
                        SubpelConv(N, wide, r=1, act="lrelu"), SubpelConv(wide, wide, act="lrelu"),
                        _conv3x3(wide, 2 * N))
    return h_a, h_s
