"""Running a convolutional transform in horizontal strips, so large images fit in memory."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

TILE_PIXELS = 1 << 21  # transforms run in horizontal strips of about this many image pixels
HALO = 3  # latent rows of context around a strip: more than the shared transforms' receptive radius


def in_strips(f: Callable[[Tensor], Tensor], x: Tensor, in_unit: int, out_unit: int,
              out_channels: int, unit_rows: int = 16, halo: int = HALO) -> Tensor:
    """f(x) for a transform mapping every `in_unit` rows of x to `out_unit` rows (one latent
    row, which stands for `unit_rows` image rows: 16 for a row of y, 64 for one of z), computed
    in strips of latent rows when the image is large.

    Each strip carries `halo` latent rows of context on both sides, computed and discarded, so
    every kept row sees its whole receptive field (a transform with a wider one passes its own
    halo): the result equals f(x) up to float rounding.
    """
    b, _, h, w = x.shape
    latent_rows = h // in_unit
    image_width = w * unit_rows // in_unit
    rows = max(4, TILE_PIXELS // (unit_rows * image_width))
    if latent_rows <= rows:
        return f(x)
    out = x.new_empty(b, out_channels, latent_rows * out_unit, w * out_unit // in_unit)
    for s in range(0, latent_rows, rows):
        a, e = max(0, s - halo), min(latent_rows, s + rows + halo)
        part = f(x[:, :, a * in_unit : e * in_unit])
        n = min(rows, latent_rows - s)
        out[:, :, s * out_unit : (s + n) * out_unit] = (
            part[:, :, (s - a) * out_unit : (s - a + n) * out_unit])
    return out
