"""Image quality metrics: PSNR and MS-SSIM on 8-bit RGB, as the Kodak anchors are measured.

MS-SSIM follows Wang, Simoncelli, Bovik, "Multi-scale structural similarity for image quality
assessment" (2003): 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, five scales with
weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), 2x2 average pooling between scales. Images too
small for five scales use as many as fit, with the weights of those scales renormalised.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_WINDOW = 11


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> float tensor of its 8-bit values (what a PNG would store)."""
    return x.clamp(0, 1).mul(255).round()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images (any shape) given in [0, 1], after rounding both to 8 bits."""
    mse = torch.mean((to_8bit(a).double() - to_8bit(b).double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """MS-SSIM of two (3, H, W) or (1, 3, H, W) images in [0, 1], after rounding to 8 bits."""
    x = to_8bit(a).double().reshape(-1, *a.shape[-3:])
    y = to_8bit(b).double().reshape(-1, *b.shape[-3:])
    levels = 1
    while levels < len(MS_SSIM_WEIGHTS) and min(x.shape[-2:]) >> levels >= _WINDOW:
        levels += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=torch.float64)
    weights /= weights.sum()
    values = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, data_range=255.0)
        values.append(ssim if level == levels - 1 else cs)
        if level < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    values = torch.stack(values).clamp_min(0)
    return float(torch.prod(values**weights))


def _gaussian_window(size: int = _WINDOW, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian (size,), float64, summing to 1; the 2-D window is its outer product."""
    r = torch.arange(_WINDOW, dtype=torch.float64) - _WINDOW // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    if size < _WINDOW:  # a smaller image: the window resampled to its size (linear)
        g = F.interpolate(g.view(1, 1, -1), size=size, mode="linear", align_corners=True).view(-1)
    return g / g.sum()


def _ssim_terms(x: torch.Tensor, y: torch.Tensor, data_range: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast-structure term over valid windows (window fully inside);
    images smaller than the window are compared with a window of their size. The Gaussian
    window is separable: two 1-D passes instead of one 11x11 (about 5x faster, the same sums)."""
    g = _gaussian_window(min(_WINDOW, *x.shape[-2:])).to(x)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    channels = 5 * x.shape[1]
    rows = g.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = g.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    blurred = F.conv2d(F.conv2d(stacked, rows, groups=channels), cols, groups=channels)
    mu_x, mu_y, xx, yy, xy = blurred.chunk(5, dim=1)
    sxx = xx - mu_x**2
    syy = yy - mu_y**2
    sxy = xy - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).mean(), cs.mean()
