"""The coder interface that every backend implements (`engine.coder.open_coder` picks one)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch

Array = np.ndarray | torch.Tensor
Segment = tuple[Array, Array]  # (values, table indexes), 1-D integer arrays of equal length


class Coder(ABC):
    """Encodes a batch of streams in one call, and opens decoders for a batch of streams.

    name: "cpu", "cuda" or "emulated".
    device: where symbol and index tensors are best placed (others are moved there).
    """

    name: str
    device: torch.device

    @abstractmethod
    def encode(self, streams: list[list[Segment]]) -> list[bytes]:
        """Encodes every stream, a list of segments (arrays or tensors on any device): one bytes
        object per stream. A table index out of range raises CodecError naming the stream, the
        segment and the position."""

    @abstractmethod
    def decoder(self, streams: Sequence[bytes | memoryview]) -> StreamDecoder:
        """A decoder of these streams; a bad stream header raises CodecError("stream k: ...")
        at once."""


class StreamDecoder(ABC):
    """Decodes many streams together, one segment of every stream per `decode` call, so that a
    segment's table indexes may depend on the values of earlier ones (z before y in the codec).
    Errors raise CodecError naming the first failing stream: damaged data or bad table indexes
    in `decode`, a stream that did not end exactly in `finish`."""

    num_streams: int

    def decode(self, indexes: list[Array | None]) -> list[torch.Tensor]:
        """Decodes the next segment of every stream: indexes[k] holds the table index of each of
        its values (None or empty: stream k does not advance). Returns int32 tensors on the
        coder's device."""
        if len(indexes) != self.num_streams:
            raise ValueError(f"decode needs one index array (or None) per stream: "
                             f"{self.num_streams}, not {len(indexes)}")
        return self._decode(indexes)

    @abstractmethod
    def _decode(self, indexes: list[Array | None]) -> list[torch.Tensor]:
        """`decode` once the number of index arrays is checked."""

    @abstractmethod
    def finish(self) -> None:
        """Raises CodecError unless every stream ended exactly after its last segment."""


def to_numpy(x: Array | None) -> np.ndarray:
    """x as a host array (None: an empty int32 one)."""
    if x is None:
        return np.zeros(0, np.int32)
    return x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
