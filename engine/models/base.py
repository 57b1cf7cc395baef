"""What the codec needs from a model kind: the coding interface every model implements.

A model codes an image's latents in *passes*. The table indexes of pass k may depend on the
symbols of passes < k (a hyperprior's z decides the tables of y; a channel-conditional model
decides a slice's tables from the slices before it); inside a pass every symbol decodes in
parallel. The codec pads, batches, splits passes into parallel streams and runs the coder; it
knows nothing else about the model.

    encode: x --pad--> analyze --> latents --encode_latents--> Encoded (symbols, indexes per pass)
    decode: decode() is a generator: it yields the table indexes of pass 0, receives its symbols,
            yields the indexes of pass 1, ... and returns the image (x_hat, padded size).

The first `WHOLE_PASSES` passes (side information such as z) are coded whole in stream 0; every
later pass is cut into one run per stream, so that large images decode in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy.cdf import CdfTables

if TYPE_CHECKING:
    from .integer_hyper import IntegerHyper
    from .rectifier import RectifiedDecoder

Latents = tuple[Tensor, ...]
# The decoding coroutine: yields (B, n_k) int32 table indexes, receives (B, n_k) int32 symbols,
# returns x_hat (B, 3, H, W) of the padded size.
Decoding = Generator[Tensor, Tensor, Tensor]
# A relaxed rounding for refinement: v (the values the codec rounds) -> a differentiable Q(v).
Quantizer = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ModelInfo:
    """Where a model's weights come from. `fingerprint` (CRC32 of the state dict) goes into every
    stream, so a stream never decodes with other weights; `quality` is the shipped level (0 for
    other weights); `lam` the training lambda; `meta` the weights file's training record."""

    fingerprint: int
    quality: float = 0.0
    lam: float | None = None
    path: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Encoded:
    """A batch's coding passes: symbols[k] and indexes[k] are (B, n_k) int32 (indexes into the
    model's `tables()`); bits (B,) is the model's estimate of each image's coded size;
    `integer`: the tables were chosen by the model's integer hyper-decoder (the stream says so)."""

    symbols: list[Tensor]
    indexes: list[Tensor]
    bits: Tensor
    integer: bool = False


class CodingModel(nn.Module):
    """Base of every model kind. Subclasses set the class constants and implement the methods
    that raise NotImplementedError; `config` is a frozen dataclass stored in weights files."""

    ARCH: ClassVar[str]  # the kind's name in weights files
    KIND_ID: ClassVar[int]  # the kind's id in stream headers (docs/FORMAT.md)
    ALIGN: ClassVar[int] = 64  # images are padded to multiples of this
    WHOLE_PASSES: ClassVar[int] = 1  # leading passes coded whole in stream 0
    VARIABLE_RATE: ClassVar[bool] = False  # whether `quality` steers the rate of one network
    INTEGER_HYPER: ClassVar[bool] = False  # whether it codes with an integer hyper-decoder
    RECTIFIABLE: ClassVar[bool] = False  # whether it decodes with a quantization rectifier

    def __init__(self) -> None:
        super().__init__()
        self.info: ModelInfo | None = None  # set by engine.zoo when loaded from a weights file
        # Derived coding state (tables, ...), built on first use; a plain dict so it stays out
        # of the state dict. `invalidate` clears it after the weights change.
        self._cache: dict[str, object] = {}

    @property
    def integer_hyper(self) -> IntegerHyper | None:
        """The exact integer hyper-decoder (`engine.models.integer_hyper`) that codes this
        model's streams, if its weights have one; kept out of the state dict (and so out of the
        weights fingerprint: streams coded without it keep decoding)."""
        return self.__dict__.get("_integer_hyper")

    @classmethod
    def integer_from_state(cls, state: dict[str, Tensor]) -> IntegerHyper:
        """The integer hyper-decoder of this kind from a state dict (a companion file);
        ValueError when it does not fit."""
        from .integer_hyper import IntegerHyper

        return IntegerHyper.from_state(state)

    def attach_integer_hyper(self, integer_hyper: IntegerHyper | None) -> None:
        if integer_hyper is not None and not self.INTEGER_HYPER:
            raise ValueError(f"{self.ARCH} models do not code with an integer hyper-decoder")
        self.__dict__["_integer_hyper"] = integer_hyper
        self.invalidate()

    @property
    def rectifier(self) -> RectifiedDecoder | None:
        """The second decoder of this model's streams, with a quantization rectifier
        (`engine.models.rectifier`), if its weights have one; like `integer_hyper`, kept out of
        the state dict: it does not change what the encoder writes."""
        return self.__dict__.get("_rectifier")

    def attach_rectifier(self, rectifier: RectifiedDecoder | None) -> None:
        if rectifier is not None and not self.RECTIFIABLE:
            raise ValueError(f"{self.ARCH} models do not decode with a quantization rectifier")
        self.__dict__["_rectifier"] = rectifier

    # --- geometry ------------------------------------------------------------------------------

    @classmethod
    def padded(cls, n: int) -> int:
        """n rounded up to a multiple of ALIGN."""
        return -(-n // cls.ALIGN) * cls.ALIGN

    @classmethod
    def pad(cls, x: Tensor) -> Tensor:
        """Replicate the last row and column up to multiples of ALIGN (cropped after decoding)."""
        h, w = x.shape[2:]
        ph, pw = cls.padded(h) - h, cls.padded(w) - w
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def pass_shapes(self, height: int, width: int) -> list[tuple[int, ...]]:
        """The symbol shape (C, h, w) of each pass for an image of this size (any size)."""
        raise NotImplementedError

    # --- coding --------------------------------------------------------------------------------

    def analyze(self, x: Tensor) -> Latents:
        """Padded x (B, 3, H, W) in [0, 1] -> the latents that refinement may optimise."""
        raise NotImplementedError

    def encode_latents(self, latents: Latents, quality: float) -> Encoded:
        """Latents -> coding passes. `quality` matters to variable-rate models only."""
        raise NotImplementedError

    def decode(self, batch: int, height: int, width: int, quality: float,
               device: torch.device, integer: bool = False, rectify: bool = False) -> Decoding:
        """The decoding coroutine for `batch` images of this (unpadded) size (module docstring);
        `integer`: the stream's tables come from the integer hyper-decoder; `rectify`: the
        image comes from the `rectifier` decoder (only ever asked of RECTIFIABLE kinds)."""
        raise NotImplementedError

    def decoder_latents(self, latents: Latents) -> tuple[Tensor, Tensor, Tensor]:
        """What `decode` has of these latents before synthesis: (y_hat float32, means, scales),
        each (B, M, h, w); a rectifier's inputs, and its training data (RECTIFIABLE kinds)."""
        raise NotImplementedError(f"{type(self).__name__} does not decode with a rectifier")

    def tables(self) -> CdfTables:
        """Every CDF table the passes index, built once (cached until `invalidate`)."""
        raise NotImplementedError

    def training_lambda(self, quality: float) -> float | None:
        """The rate-distortion lambda the model was trained for at `quality` (None: unknown)."""
        return None if self.info is None else self.info.lam

    def quality_range(self) -> tuple[float, float]:
        """The qualities a variable-rate model codes at (VARIABLE_RATE kinds only)."""
        raise NotImplementedError(f"{type(self).__name__} is not a variable-rate model")

    def relaxed(self, latents: Latents, quality: float, quantize: Quantizer
                ) -> tuple[Tensor, list[Tensor]]:
        """(x_hat unclamped, likelihoods) with `quantize` in place of every rounding the codec
        does: the differentiable loss of latent refinement (engine.refine)."""
        raise NotImplementedError

    def invalidate(self) -> None:
        """Forget the derived coding state after the weights change."""
        self._cache.clear()

    # --- built on the above --------------------------------------------------------------------

    def reconstruct(self, encoded: Encoded, height: int, width: int, quality: float) -> Tensor:
        """What the decoder makes of `encoded` by default (the same calls, without the coder;
        with the rectifier when there is one): x_hat (B, 3, padded H, padded W)."""
        batch = encoded.symbols[0].shape[0]
        decoding = self.decode(batch, height, width, quality, encoded.symbols[0].device,
                               encoded.integer, self.rectifier is not None)
        next(decoding)
        try:
            for symbols in encoded.symbols:
                decoding.send(symbols)
        except StopIteration as done:
            return done.value
        raise RuntimeError(f"{type(self).__name__}.decode asked for more passes than it encodes")
