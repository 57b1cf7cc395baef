"""The codec: images -> bytes -> images, for single images and batches, for any model kind.

Encoding: pad (the model's geometry) -> analyze -> latents (refined if asked) -> the model's
coding passes (symbols and table indexes) -> streams -> one coder call for the whole batch ->
header + streams. Decoding: header -> the model that made the stream -> the model's decoding
coroutine asks for each pass's symbols by giving their table indexes; one coder call decodes that
pass of every stream of every image -> the coroutine returns the image -> crop.

Streams: the model's first WHOLE_PASSES passes go whole into stream 0; every later pass is cut
into S equal runs, run s into stream s, so that S streams decode in parallel (docs/FORMAT.md).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import coder, cpu_threads, format, precision, zoo
from .errors import CodecError, DeviceUnavailable, UsageError
from .images import ImageLike, read_file, to_batch
from .models import CodingModel, Encoded, ModelInfo
from .models.base import Decoding, Latents
from .precision import check as check_precision
from .profiling import stage

if TYPE_CHECKING:
    from .refine import Refine

DEFAULT_MODEL = zoo.DEFAULT_MODEL
DEFAULT_QUALITY = zoo.DEFAULT_QUALITY
DEVICES = "auto, cpu, cuda or cuda:N"
MAX_PIXELS = 1 << 28  # the default limit on height x width, for encoding and decoding alike
SYMBOLS_PER_STREAM = 4096  # no stream holds fewer split symbols than this
FILL = 0.95  # a refined stream under a byte budget fills at least this share of it
FILL_TRIES = 8  # refinements tried to fill a budget


@dataclass(frozen=True)
class _Opened:
    """A parsed stream and the model that decodes it."""

    header: format.Header
    model: CodingModel
    streams: list[memoryview]


class Codec:
    """Holds loaded models (and their coder tables) for repeated compress/decompress calls.
    Safe to share between threads.

    model, quality: the shipped model and level to encode with (`engine.zoo.shipped_models()`),
        or CompressAI's published model by name (`engine.zoo.zoo_models()`; fetched into the
        cache on first use); decoding always uses the stream's own.
    device: where the networks run: "auto" (default: a CUDA tensor's own device, else the GPU
        when torch sees one, else the CPU), "cpu", "cuda", "cuda:N".
    weights: a weights file or a model (in eval mode) to use instead of the shipped ones.
    threads: coder threads (0: as many as torch uses).
    stream_bytes: target size of one coded stream. Each stream costs ~100 bytes of lane
        flushes, and streams decode in parallel: larger means smaller files, smaller means more
        parallel decoding of large images.
    max_pixels: the largest image (height x width) this codec encodes, and the largest a stream
        may claim before decoding allocates anything; the default, 2^28, is the same on both
        sides, so a default codec decodes whatever a default codec encodes.
    precision: of the analysis and synthesis transforms, "float32", "bfloat16" or "auto"
        (g_a in bfloat16 on CPUs with AVX512_BF16 or AMX, g_s too with AMX; see
        `engine.precision`). Streams decode at any precision.
    """

    def __init__(self, quality: float = DEFAULT_QUALITY, device: str | torch.device = "auto",
                 weights: str | Path | CodingModel | None = None, threads: int = 0,
                 stream_bytes: int = 16384, max_pixels: int = MAX_PIXELS,
                 precision: str = "auto", model: str = DEFAULT_MODEL) -> None:
        self.precision = check_precision(precision)
        self.device = check_device(device)
        check_quality_number(quality)
        if stream_bytes < 1 or max_pixels < 1 or threads < 0:
            raise ValueError("stream_bytes and max_pixels must be positive, threads >= 0")
        self.threads = threads or torch.get_num_threads()
        self.stream_bytes = stream_bytes
        self.max_pixels = max_pixels
        if weights is None:
            zoo.check_quality(model, quality)
        else:
            weights = _custom_model(weights)
        self.model_name, self.quality, self._weights = model, quality, weights
        self._lock = threading.Lock()
        self._models: dict[tuple[int, str], CodingModel] = {}
        self._coders: dict[tuple[int, str], coder.Coder] = {}

    # --- models and coders ---------------------------------------------------------------------

    def model(self, device: torch.device | str = "cpu") -> CodingModel:
        """The model this codec encodes with, on `device` (cached)."""
        return self._on_device(self._weights or zoo.load(self.model_name, self.quality),
                               torch.device(device))

    def levels(self) -> tuple[float, ...]:
        """The levels a byte budget chooses among, in increasing rate: every level of this
        codec's model (`engine.zoo.levels`), or its one set of weights' own."""
        if self._weights is not None:
            return (self._weights.info.quality,)
        return zoo.levels(self.model_name)

    def level(self, quality: float, device: torch.device | str = "cpu") -> CodingModel:
        """The model of one of `levels()` on `device` (a zoo model's is fetched on first use:
        a byte budget's bisection loads only the levels it tries)."""
        if self._weights is not None:
            return self.model(device)
        return self._on_device(zoo.load(self.model_name, quality), torch.device(device))

    def _on_device(self, model: CodingModel, device: torch.device) -> CodingModel:
        key = (id(model), str(device))
        with self._lock:
            if key not in self._models:
                if next(model.parameters()).device == device:
                    self._models[key] = model
                else:
                    # Not an inference-mode copy, whatever the caller's mode: refinement needs
                    # gradients through these weights.
                    with torch.inference_mode(False):
                        moved = copy.deepcopy(model).to(device)
                        if moved.rectifier is not None:  # outside the module tree
                            moved.rectifier.to(device)
                    moved.info = model.info
                    self._models[key] = moved
            return self._models[key]

    def coder_backend(self, device: str | torch.device) -> str:
        """Which entropy coder runs for networks on `device`: "cuda", or "cpu" (with the reason
        when a CUDA device was asked for)."""
        device = torch.device(device)
        if device.type != "cuda":
            return "cpu"
        return "cuda" if coder.available() else f"cpu ({coder.unavailable_reason()})"

    def _coder(self, model: CodingModel, device: torch.device) -> coder.Coder:
        """The coder for networks on `device` (the GPU coder when it can run) with the model's
        tables."""
        where = device if device.type == "cuda" and coder.available() else torch.device("cpu")
        key = (model.info.fingerprint, model.tables().fingerprint, str(where))
        with self._lock:
            if key not in self._coders:
                self._coders[key] = coder.open_coder(model.tables(), where, self.threads)
            return self._coders[key]

    def device_for(self, x: torch.Tensor | None = None) -> torch.device:
        """Where the networks run for input x (None: for decoding): this codec's device, or for
        "auto" a CUDA tensor's own device, else the GPU when torch sees one, else the CPU."""
        if self.device is not None:
            return self.device
        if x is not None and x.device.type != "cpu":
            return x.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # --- compress ------------------------------------------------------------------------------

    def compress(self, image: ImageLike, drop_alpha: bool = False, refine: Refine | None = None,
                 max_bytes: int | None = None, target_bpp: float | None = None) -> bytes:
        """One image (see `engine.images.to_batch` for the accepted forms) -> bytes.
        `refine`: optimise the latents before coding (`engine.refine`); the stream is ordinary.
        `max_bytes` (or `target_bpp`): code at the highest quality whose stream fits instead of
        this codec's quality: the quality of a variable-rate model, else the level (with
        `refine`, refined to fill the budget; see `_fit_levels`)."""
        x = to_batch(image, drop_alpha)
        if x.shape[0] != 1:
            raise ValueError(f"compress takes one image, got a batch of {x.shape[0]}; "
                             "use compress_batch")
        return self.compress_batch([x], refine=refine, max_bytes=max_bytes,
                                   target_bpp=target_bpp)[0]

    @cpu_threads.on_free_cores
    @torch.no_grad()
    def compress_batch(self, images: list[ImageLike] | torch.Tensor,
                       drop_alpha: bool = False, refine: Refine | None = None,
                       max_bytes: int | None = None, target_bpp: float | None = None
                       ) -> list[bytes]:
        """Many images -> one bytes object each, the same bytes as one `compress` each. Images
        of equal size share network passes and all streams are coded in one coder call.
        `refine`: as in `compress` (images of equal size are refined together, each keeping its
        own best latents). `max_bytes`, `target_bpp`: as in `compress`, for each image."""
        xs = [x[i : i + 1] for im in images for x in [to_batch(im, drop_alpha)]
              for i in range(x.shape[0])]
        if not xs:
            return []
        for x in xs:
            self._check_size(*x.shape[2:])
        device = self.device_for(xs[0])
        model = self.model(device)
        if max_bytes is not None or target_bpp is not None:
            if not model.VARIABLE_RATE:
                return [self._fit_levels(x.to(device), _budget(max_bytes, target_bpp, x),
                                         refine) for x in xs]
            if refine is not None:
                raise UsageError("a byte budget with refinement needs a model of fixed levels; "
                                 f"{model.ARCH} is variable-rate")
            return [self._fit(model, x.to(device), _budget(max_bytes, target_bpp, x))
                    for x in xs]
        quality = self._quality(model)
        streams: list[list[list[coder.Segment]]] = [None] * len(xs)
        for idx in _groups([x.shape[2:] for x in xs]):
            batch = torch.cat([xs[i] for i in idx]).to(device)
            encoded = self._encode(model, self._latents(model, batch, quality, refine), quality)
            for j, i in enumerate(idx):
                streams[i] = self._segments(model, encoded, j)
        return self._pack(model, device, quality, [x.shape[2:] for x in xs], streams)

    def _pack(self, model: CodingModel, device: torch.device, quality: float,
              sizes: list[tuple[int, int]], streams: list[list[list[coder.Segment]]]
              ) -> list[bytes]:
        """Every image's streams through one coder call, each behind its header."""
        with stage("entropy coding"):
            coded = self._coder(model, device).encode([s for segs in streams for s in segs])
        # A model with an integer hyper-decoder always codes with it (encode_latents).
        integer_fp = None if model.integer_hyper is None else model.integer_hyper.fingerprint
        out, k = [], 0
        for (h, w), segs in zip(sizes, streams, strict=True):
            parts = coded[k : k + len(segs)]
            k += len(segs)
            header = format.Header(model.KIND_ID, quality, model.info.fingerprint,
                                   model.tables().fingerprint, h, w,
                                   tuple(len(p) for p in parts), integer_fingerprint=integer_fp,
                                   rectifier=model.rectifier is not None)
            out.append(format.pack(header, parts))
        return out

    def _stream(self, model: CodingModel, x: torch.Tensor, refine: Refine | None = None
                ) -> bytes:
        """The stream of one image x (1, 3, H, W) with a model of fixed levels."""
        quality = self._quality(model)
        encoded = self._encode(model, self._latents(model, x, quality, refine), quality)
        return self._pack(model, x.device, quality, [x.shape[2:]],
                          [self._segments(model, encoded, 0)])[0]

    def _fit_levels(self, x: torch.Tensor, budget: int, refine: Refine | None) -> bytes:
        """The stream of x at the highest level (`levels`) that fits in `budget` bytes, found by
        bisection (rate grows with the level). With `refine`: seed 001's semi-multi-rate
        refinement fills the budget, to FILL of it or more where FILL_TRIES refinements find
        such a stream: the next level up (the fitting one at the top) refined with its lambda
        scaled, the scale bisected in octaves; else the largest refined stream that fits, else
        the level's own."""
        levels = self.levels()
        fits: dict[int, bytes] = {}
        low, high = -1, len(levels)  # invariant: level low fits (or is -1), level high does not
        while high - low > 1:
            mid = (low + high) // 2
            data = self._stream(self.level(levels[mid], x.device), x)
            if len(data) <= budget:
                low, fits[mid] = mid, data
            else:
                high = mid
        if low < 0:
            raise UsageError(f"the image needs {len(data)} bytes even at the lowest level "
                             f"({levels[0]:g}), above the budget of {budget}")
        if refine is None:
            return fits[low]
        from .refine import refine_lambda

        model = self.level(levels[min(low + 1, len(levels) - 1)], x.device)
        lam = refine_lambda(model, refine, self._quality(model))
        best, octaves, below, above = b"", 0.0, None, None
        for _ in range(FILL_TRIES):
            data = self._stream(model, x, dataclasses.replace(refine, lam=lam * 2**octaves))
            if len(data) <= budget:
                if len(data) >= FILL * budget:
                    return data
                below, best = octaves, max(best, data, key=len)
            else:
                above = octaves
            # the next scale: halfway between the two nearest tried, else an octave on
            octaves = ((below + above) / 2 if below is not None and above is not None
                       else octaves + (1 if above is None else -1))
        return best or fits[low]

    def _fit(self, model: CodingModel, x: torch.Tensor, budget: int) -> bytes:
        """The stream of x at the highest quality (on the header's 1/256 grid) that fits in
        `budget` bytes of a variable-rate model, by bisection: the analysis runs once; gains,
        quantization and coding repeat."""
        latents = self._latents(model, x, 0.0, None)
        low, high = (round(q * format.QUALITY_UNITS) for q in model.quality_range())

        def stream(units: int) -> bytes:
            q = units / format.QUALITY_UNITS
            encoded = self._encode(model, latents, q)
            return self._pack(model, x.device, q, [x.shape[2:]],
                              [self._segments(model, encoded, 0)])[0]

        best = stream(low)
        if len(best) > budget:
            raise UsageError(f"the image needs {len(best)} bytes even at the lowest quality "
                             f"({low / format.QUALITY_UNITS:g}), above the budget of {budget}")
        top = stream(high)
        if len(top) <= budget:
            return top
        while high - low > 1:  # invariant: low fits, high does not
            mid = (low + high) // 2
            candidate = stream(mid)
            if len(candidate) <= budget:
                low, best = mid, candidate
            else:
                high = mid
        return best

    def _check_size(self, height: int, width: int) -> None:
        if height > format.MAX_SIDE or width > format.MAX_SIDE:
            raise ValueError(f"images are limited to {format.MAX_SIDE} pixels a side, "
                             f"not {width}x{height}")
        if height * width > self.max_pixels:
            raise ValueError(f"a {width}x{height} image has {height * width} pixels, above "
                             f"this codec's max_pixels={self.max_pixels} (raise it to code "
                             "larger images; decoders need the same setting)")

    def _quality(self, model: CodingModel) -> float:
        """The quality to code at: this codec's (on the header's grid) for a variable-rate
        model, the weights' own level otherwise."""
        if not model.VARIABLE_RATE:
            return model.info.quality
        quality = round(self.quality * format.QUALITY_UNITS) / format.QUALITY_UNITS
        low, high = model.quality_range()
        if not low <= quality <= high:
            raise ValueError(f"quality {self.quality:g} is outside this model's range "
                             f"[{low:g}, {high:g}]")
        return quality

    def _latents(self, model: CodingModel, x: torch.Tensor, quality: float,
                 refine: Refine | None) -> Latents:
        with stage("analysis"):
            if refine is not None:
                from .refine import refine_latents

                return refine_latents(model, x, refine, quality)[0]
            with precision.transforms_in(self._dtype(x.device, synthesis=False)):
                return model.analyze(model.pad(x))

    @staticmethod
    def _encode(model: CodingModel, latents: Latents, quality: float) -> Encoded:
        with stage("quantize"):
            return model.encode_latents(latents, quality)

    def _segments(self, model: CodingModel, encoded: Encoded, i: int
                  ) -> list[list[coder.Segment]]:
        """Image i's streams: the whole passes in stream 0, then a run of every later pass in
        each stream."""
        passes = [(s[i], k[i]) for s, k in zip(encoded.symbols, encoded.indexes, strict=True)]
        whole, split = passes[: model.WHOLE_PASSES], passes[model.WHOLE_PASSES :]
        by_size = round(float(encoded.bits[i]) / 8 / self.stream_bytes)
        count = max(1, min(by_size, _max_streams(sum(s.numel() for s, _ in split))))
        streams = [[] for _ in range(count)]
        streams[0] += whole
        for symbols, indexes in split:
            for s, (a, e) in enumerate(_runs(symbols.numel(), count)):
                streams[s].append((symbols[a:e], indexes[a:e]))
        return streams

    def _dtype(self, device: torch.device, synthesis: bool) -> torch.dtype:
        return precision.resolve(self.precision, device, synthesis)

    # --- decompress ----------------------------------------------------------------------------

    def decompress(self, data: bytes | str | Path, device: str | torch.device | None = None,
                   rectifier: bool = True) -> torch.Tensor:
        """bytes (or a stream file's path) -> (3, H, W) float32 image in [0, 1], on the device
        the networks ran on
        (`device`, default: this codec's). `rectifier`: decode streams whose header says so
        with the weights' quantization rectifier (`engine.models.rectifier`); False: with the
        model's own synthesis (faster; docs/RECTIFIER.md)."""
        return self.decompress_batch([data], device, rectifier)[0]

    @torch.no_grad()
    @cpu_threads.at_full_threads
    def decompress_batch(self, streams: list[bytes | str | Path],
                         device: str | torch.device | None = None, rectifier: bool = True
                         ) -> list[torch.Tensor]:
        """Decode many streams (bytes, or paths of stream files). The streams of one model
        decode together: one coder call per coding pass for all of them. `rectifier`: as in
        `decompress`."""
        device = check_device(device) or self.device_for()
        opened = [self._open(read_stream(data) if isinstance(data, (str, Path)) else data,
                             device, rectifier) for data in streams]
        out: list[torch.Tensor] = [None] * len(opened)
        for idx in _groups([(id(o.model),) for o in opened]):
            images = self._decode_one_model([opened[i] for i in idx], device, rectifier)
            for i, x in zip(idx, images, strict=True):
                out[i] = x
        return out

    def _decode_one_model(self, opened: list[_Opened], device: torch.device, rectifier: bool
                          ) -> list[torch.Tensor]:
        """Streams of one model: each pass of every image in one coder call; images of equal
        size and quality share network passes."""
        model = opened[0].model
        starts = [0]  # image i's streams are the decoder's streams starts[i] .. starts[i + 1]
        for o in opened:
            starts.append(starts[-1] + len(o.streams))
        dec = self._coder(model, device).decoder([s for o in opened for s in o.streams])
        with precision.transforms_in(self._dtype(device, synthesis=True)):
            groups = []
            for members in _groups([(o.header.height, o.header.width, o.header.quality,
                                     o.header.integer_fingerprint, o.header.rectifier)
                                    for o in opened]):
                h = opened[members[0]].header
                groups.append(_Pending(members, model.decode(
                    len(members), h.height, h.width, h.quality, device,
                    integer=h.integer_fingerprint is not None,
                    rectify=rectifier and h.rectifier)))
                groups[-1].indexes = next(groups[-1].decoding)
            # How many passes each group codes (a wavefront's grows with the image).
            for g in groups:
                h = opened[g.members[0]].header
                g.passes = len(model.pass_shapes(h.height, h.width))
            for k in range(max(g.passes for g in groups)):
                active = [g for g in groups if k < g.passes]
                jobs: list[torch.Tensor | None] = [None] * starts[-1]
                for g in active:
                    for j, i in enumerate(g.members):
                        runs = self._runs_of(model, k, starts[i + 1] - starts[i], g.indexes[j])
                        jobs[starts[i] : starts[i] + len(runs)] = runs
                with stage("entropy coding"):
                    symbols = dec.decode(jobs)
                for g in active:
                    g.receive(torch.stack([torch.cat(symbols[starts[i] : starts[i + 1]])
                                           for i in g.members]))
        with stage("entropy coding"):
            dec.finish()
        out: list[torch.Tensor] = [None] * len(opened)
        for g in groups:
            if g.images is None:
                raise RuntimeError(f"{type(model).__name__}.decode wants more passes than "
                                   "pass_shapes lists")
            for j, i in enumerate(g.members):
                out[i] = g.images[j, :, : opened[i].header.height, : opened[i].header.width]
        return out

    @staticmethod
    def _runs_of(model: CodingModel, k: int, count: int, indexes: torch.Tensor
                 ) -> list[torch.Tensor]:
        """Pass k's table indexes as the encoder cut them: whole in stream 0, or in `count`
        runs."""
        if k < model.WHOLE_PASSES:
            return [indexes]
        return [indexes[a:e] for a, e in _runs(indexes.numel(), count)]

    def _open(self, data: bytes, device: torch.device, rectifier: bool) -> _Opened:
        header, streams = format.unpack(data)
        if header.height * header.width > self.max_pixels:
            raise CodecError(f"the stream claims a {header.width}x{header.height} image, above "
                             f"this codec's max_pixels={self.max_pixels}")
        model = self._model_for(header)
        if rectifier and header.rectifier and model.rectifier is None:
            raise CodecError("the stream asks for a quantization rectifier, which these weights "
                             "lack (decode with rectifier=False, --no-rectifier, to do without)")
        model = self._on_device(model, device)
        shapes = model.pass_shapes(header.height, header.width)
        if header.latent_shapes and list(header.latent_shapes) != shapes:
            raise CodecError(f"latent shapes {list(header.latent_shapes)} do not match a "
                             f"{header.width}x{header.height} image ({shapes})")
        split = sum(math.prod(s) for s in shapes[model.WHOLE_PASSES :])
        if len(streams) > _max_streams(split):
            raise CodecError(f"too many streams ({len(streams)}) for the latent size")
        return _Opened(header, model, streams)

    def _model_for(self, header: format.Header) -> CodingModel:
        if self._weights is None:
            model = zoo.for_stream(header.kind_id, header.quality, header.fingerprint)
        else:
            model = self._weights
            if header.kind_id != model.KIND_ID:
                raise CodecError(f"the stream was made by model kind {header.kind_id}, these "
                                 f"weights are kind {model.KIND_ID} ({model.ARCH})")
            if model.info.fingerprint != header.fingerprint:
                raise CodecError(f"the stream was encoded with other weights (fingerprint "
                                 f"{header.fingerprint:08x}, these are "
                                 f"{model.info.fingerprint:08x})")
        if header.integer_fingerprint is not None and (
                model.integer_hyper is None
                or model.integer_hyper.fingerprint != header.integer_fingerprint):
            have = ("none" if model.integer_hyper is None
                    else f"{model.integer_hyper.fingerprint:08x}")
            raise CodecError(f"the stream was coded with an integer hyper-decoder (fingerprint "
                             f"{header.integer_fingerprint:08x}) these weights lack (theirs: "
                             f"{have})")
        if model.VARIABLE_RATE:
            low, high = model.quality_range()
            if not low <= header.quality <= high:
                raise CodecError(f"the stream's quality {header.quality:g} is outside its "
                                 f"model's range [{low:g}, {high:g}]")
        if header.tables_fingerprint not in (None, model.tables().fingerprint):
            raise CodecError(f"the stream was coded with other CDF tables (fingerprint "
                             f"{header.tables_fingerprint:08x}, this engine derives "
                             f"{model.tables().fingerprint:08x} from the same weights)")
        return model


@dataclass
class _Pending:
    """Images of one size and quality decoding together: their model's decoding coroutine, the
    table indexes it asked for last, and at the end their (padded) images."""

    members: list[int]
    decoding: Decoding
    passes: int = 0
    indexes: torch.Tensor | None = None
    images: torch.Tensor | None = None

    def receive(self, symbols: torch.Tensor) -> None:
        """Give the coroutine the symbols of the pass it asked for."""
        try:
            self.indexes = self.decoding.send(symbols)
        except StopIteration as finished:
            self.images = finished.value


def read_stream(path: str | Path) -> bytes:
    """A stream file's bytes, checked (`format.unpack`); errors name the file."""
    data = read_file(path)
    try:
        format.unpack(data)
    except CodecError as e:
        raise CodecError(f"{path}: {e}") from None
    return data


def check_quality_number(quality: object) -> None:
    """TypeError unless `quality` is a real number (True is not a quality, though it equals 1)."""
    if isinstance(quality, bool) or not isinstance(quality, numbers.Real):
        raise TypeError(f"quality must be a number, not {quality!r}")


def _budget(max_bytes: int | None, target_bpp: float | None, x: torch.Tensor) -> int:
    """The byte budget of image x (1, 3, H, W) from exactly one of the two limits."""
    if (max_bytes is None) == (target_bpp is None):
        raise ValueError("give max_bytes or target_bpp, not both")
    if target_bpp is not None:
        if not target_bpp > 0:
            raise ValueError(f"target_bpp must be positive, not {target_bpp}")
        return int(target_bpp * x.shape[2] * x.shape[3] / 8)
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, not {max_bytes}")
    return max_bytes


def _custom_model(weights: str | Path | CodingModel) -> CodingModel:
    if isinstance(weights, (str, Path)):
        return zoo.load_weights(weights)
    if not isinstance(weights, CodingModel):
        raise TypeError(f"weights must be a path or a model, not {type(weights).__name__}")
    if weights.training:
        raise ValueError("the model is in training mode; call .eval() first")
    if weights.info is None:
        weights.info = ModelInfo(zoo.fingerprint(weights))
    return weights


def check_device(device: str | torch.device | None) -> torch.device | None:
    """None for "auto" (and None); UsageError for what torch does not know as a device,
    DeviceUnavailable for a CUDA device this process cannot use."""
    if device is None or device == "auto":
        return None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"unknown device {device!r}; expected {DEVICES}") from None
    if device.type == "cuda":
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if torch.version.cuda is None and torch.version.hip is None:
            raise DeviceUnavailable(f"CUDA is not available: torch {torch.__version__} is a "
                                    "CPU build")
        if visible == 0:
            raise DeviceUnavailable("CUDA is not available: no GPU visible")
        if (device.index or 0) >= visible:
            raise DeviceUnavailable(f"no device {device}: {visible} GPU(s) visible")
    return device


def _max_streams(split_symbols: int) -> int:
    """The most streams a pass layout may use: one per SYMBOLS_PER_STREAM split symbols."""
    return max(1, min(split_symbols // SYMBOLS_PER_STREAM, format.MAX_STREAMS))


def _runs(n: int, count: int) -> list[tuple[int, int]]:
    """`count` runs of n symbols: run s is [floor(s n / count), floor((s + 1) n / count))."""
    cuts = [n * s // count for s in range(count + 1)]
    return list(zip(cuts, cuts[1:], strict=False))


def _groups(keys: list) -> list[list[int]]:
    """Indexes grouped by equal key, in first-appearance order."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(tuple(k), []).append(i)
    return list(groups.values())
