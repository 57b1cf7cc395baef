"""The codec: images -> bytes -> images, for single images and batches.

Encoding: pad to a multiple of 64 -> g_a -> y -> h_a -> z -> round(z - median) -> h_s (float64)
-> (scales, means) -> symbols round(y - mean) and scale-table indexes -> rANS streams -> header.
Decoding reverses it: the header's first stream opens with z, whose hyper-decoding gives the
tables of y in every stream; then g_s, crop.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from . import coder, format, precision, zoo
from .entropy.gaussian import SCALES, scale_indexes
from .errors import CodecError
from .images import ImageLike, to_batch
from .models import ALIGN, MeanScaleHyperprior
from .precision import check as check_precision
from .profiling import stage

if TYPE_CHECKING:
    from .refine import Refine

DEFAULT_QUALITY = 3


class Codec:
    """Holds loaded models (and their CDF tables) for repeated compress/decompress calls.

    quality: the shipped model to encode with (decoding always uses the stream's own).
    device: where the networks run ("cpu", "cuda", ...; default: the input tensor's device for
        compress, CPU for decompress).
    weights: a weights file or model to use instead of the shipped ones.
    threads: coder threads (0: as many as torch uses).
    stream_bytes: target size of one coded stream. Each stream costs ~100 bytes of lane
        flushes, and streams decode in parallel: larger means smaller files, smaller means more
        parallel decoding of large images.
    max_pixels: the largest image a stream may claim before decoding allocates anything.
    precision: of g_a and g_s, "float32", "bfloat16" or "auto" (bfloat16 on CPUs with AMX;
        see `engine.precision`). Streams decode at any precision.
    """

    def __init__(self, quality: int = DEFAULT_QUALITY, device: str | torch.device | None = None,
                 weights: str | Path | MeanScaleHyperprior | None = None, threads: int = 0,
                 stream_bytes: int = 16384, max_pixels: int = 1 << 28,
                 precision: str = "auto") -> None:
        self.precision = check_precision(precision)
        self.quality = quality
        self.device = None if device is None else torch.device(device)
        self.threads = threads or torch.get_num_threads()
        self.stream_bytes = stream_bytes
        self.max_pixels = max_pixels
        if isinstance(weights, (str, Path)):
            weights = zoo.load_weights(weights)
        self._custom = weights
        self._models: dict[tuple[int, str], MeanScaleHyperprior] = {}
        self._tables: dict[tuple[int, str], coder.CoderTables] = {}

    # --- models --------------------------------------------------------------------------------

    def model(self, quality: int | None = None, device: torch.device | str = "cpu"
              ) -> MeanScaleHyperprior:
        """The model for `quality` (the custom weights if given) on `device`, cached."""
        device = torch.device(device)
        q = self.quality if quality is None else quality
        key = (q if self._custom is None else -1, str(device))
        if key not in self._models:
            base = self._custom if self._custom is not None else zoo.load_quality(q)
            if not hasattr(base, "info"):
                base.info = {"fingerprint": zoo.fingerprint(base)}
            if base.training:
                raise ValueError("the model is in training mode; call .eval() first")
            # Not an inference-mode copy: refinement needs gradients through its weights.
            with torch.inference_mode(False):
                m = base if device == _param_device(base) else copy.deepcopy(base).to(device)
            m.info = base.info
            self._models[key] = m
        return self._models[key]

    def coder_backend(self, device: str | torch.device) -> str:
        """Which entropy coder runs for networks on `device`: "cuda", or "cpu" (with the reason
        when a CUDA device was asked for)."""
        device = torch.device(device)
        if device.type != "cuda":
            return "cpu"
        return "cuda" if coder.available() else f"cpu ({coder.unavailable_reason()})"

    def _coder_tables(self, model: MeanScaleHyperprior, device: torch.device
                      ) -> coder.CoderTables:
        """The model's CDF tables on the coder for `device` (the GPU coder when it can run)."""
        where = device if device.type == "cuda" and coder.available() else torch.device("cpu")
        key = (model.info["fingerprint"], str(where))
        if key not in self._tables:
            self._tables[key] = coder.CoderTables(model.tables(), where, threads=self.threads)
        return self._tables[key]

    def _model_for(self, header: format.Header, device: torch.device) -> MeanScaleHyperprior:
        if header.model_id != zoo.MODEL_ID:
            raise CodecError(f"unknown model id {header.model_id}")
        if self._custom is not None:
            model = self.model(device=device)
        elif header.quality in zoo.shipped_qualities():
            model = self.model(header.quality, device)
        else:
            raise CodecError(f"the stream needs quality {header.quality}, which is not shipped "
                             f"(available: {zoo.shipped_qualities()})")
        if model.info["fingerprint"] != header.fingerprint:
            raise CodecError(f"the stream was encoded with other weights (fingerprint "
                             f"{header.fingerprint:08x}, this model is "
                             f"{model.info['fingerprint']:08x})")
        return model

    # --- compress ------------------------------------------------------------------------------

    def compress(self, image: ImageLike, drop_alpha: bool = False,
                 refine: Refine | None = None) -> bytes:
        """One image (see `engine.images.to_batch` for the accepted forms) -> bytes.
        `refine`: optimise the latents before coding (`engine.refine`); the stream is ordinary."""
        x = to_batch(image, drop_alpha)
        if x.shape[0] != 1:
            raise ValueError(f"compress takes one image, got a batch of {x.shape[0]}; "
                             "use compress_batch")
        return self.compress_batch([x], refine=refine)[0]

    @torch.inference_mode()
    def compress_batch(self, images: list[ImageLike] | torch.Tensor,
                       drop_alpha: bool = False, refine: Refine | None = None) -> list[bytes]:
        """Many images -> one bytes object each. Images of equal size share network passes and
        all streams are coded in one parallel coder call. `refine`: as in `compress` (images of
        equal size are refined together, each keeping its own best latents)."""
        xs = [to_batch(im, drop_alpha) for im in images]
        xs = [x[i : i + 1] for x in xs for i in range(x.shape[0])]
        for x in xs:
            if x.shape[2] > format.MAX_SIDE or x.shape[3] > format.MAX_SIDE:
                raise ValueError(f"images are limited to {format.MAX_SIDE} pixels a side")
        device = self.device or xs[0].device
        model = self.model(device=device)
        tables = self._coder_tables(model, device)
        headers, streams = [None] * len(xs), [None] * len(xs)
        for idx in _groups([x.shape[2:] for x in xs]):
            batch = torch.cat([xs[i] for i in idx]).to(device)
            encoded = self._encode_group(model, batch, tables.device, refine)
            for i, (header, segs) in zip(idx, encoded, strict=True):
                headers[i], streams[i] = header, segs
        with stage("entropy coding"):
            # One coder call for every stream of the batch; one copy of the bytes to the host.
            coded = coder.to_bytes(*coder.encode(tables, [s for segs in streams for s in segs]))
        out, k = [], 0
        for header, segs in zip(headers, streams, strict=True):
            parts = coded[k : k + len(segs)]
            k += len(segs)
            header = format.Header(**{**header.__dict__,
                                      "stream_lengths": tuple(len(p) for p in parts)})
            out.append(format.pack(header, parts))
        return out

    def _encode_group(self, model: MeanScaleHyperprior, x: torch.Tensor,
                      coder_device: torch.device, refine: Refine | None = None):
        """(B, 3, H, W) on the model's device -> [(header without lengths, streams)] per image;
        the streams' symbols and table indexes are tensors on `coder_device`."""
        from kernels.quantize import quantize

        b, _, h, w = x.shape
        with stage("analysis"):
            if refine is None:
                dtype = precision.resolve(self.precision, x.device)
                with precision.transforms_in(dtype, x.device):
                    y, z = model.analyze(precision.layout(_pad(x), dtype))
            else:
                y, z = _refined(model, x, refine)
        with stage("hyper"):
            z_sym = model.entropy_z.symbols(z)
            scales, means = model.hyper_decode(model.entropy_z.dequantize(z_sym))
        with stage("quantize"):
            bounds = torch.as_tensor(SCALES[:-1], dtype=scales.dtype, device=scales.device)
            y_sym, y_lik, y_idx = quantize(y, scales, means, bounds)
            y_bits = (-torch.log2(y_lik)).flatten(1).sum(1).tolist()
        z_sym, y_sym = z_sym.to(coder_device), y_sym.to(coder_device)
        y_idx = y_idx.to(coder_device) + model.num_z_tables
        z_idx = _z_indexes(z_sym.shape[1:], coder_device)
        result = []
        for i in range(b):
            ys, yi = y_sym[i].flatten(), y_idx[i].flatten()
            n = self._stream_count(y_bits[i], ys.numel())
            segs = [[part] for part in _split(ys, yi, n)]
            segs[0].insert(0, (z_sym[i].flatten(), z_idx))
            header = format.Header(zoo.MODEL_ID, model.info.get("quality", 0) or 0,
                                   model.info["fingerprint"], h, w, tuple(z_sym.shape[1:]),
                                   tuple(y_sym.shape[1:]), ())
            result.append((header, segs))
        return result

    def _stream_count(self, bits: float, symbols: int) -> int:
        by_size = round(bits / 8 / self.stream_bytes)
        return int(max(1, min(by_size, symbols // 4096, format.MAX_STREAMS)))

    # --- decompress ----------------------------------------------------------------------------

    def decompress(self, data: bytes, device: str | torch.device | None = None) -> torch.Tensor:
        """bytes -> (3, H, W) float32 image in [0, 1]."""
        return self.decompress_batch([data], device)[0]

    @torch.inference_mode()
    def decompress_batch(self, streams: list[bytes], device: str | torch.device | None = None
                         ) -> list[torch.Tensor]:
        """Decode many streams. All coded streams of one model decode together, one coder call
        for every z and one for every y, uploaded to the GPU coder at once when it runs."""
        device = torch.device(device or self.device or "cpu")
        parsed = [self._open(data, device) for data in streams]
        out = [None] * len(parsed)
        for idx in _groups([(p[1].info["fingerprint"],) for p in parsed]):
            images = self._decode_one_model([parsed[i] for i in idx], device)
            for i, x in zip(idx, images, strict=True):
                out[i] = x
        return out

    def _decode_one_model(self, parsed: list, device: torch.device) -> list[torch.Tensor]:
        """Images that share a model: z of every image, hyper-decoding per size, y, synthesis."""
        model = parsed[0][1]
        tables = self._coder_tables(model, device)
        firsts = np.cumsum([0] + [len(views) for _, _, views in parsed]).tolist()
        dec = coder.Decoder(tables, [v for _, _, views in parsed for v in views])
        z_jobs = [None] * firsts[-1]
        for i, (header, _, _) in enumerate(parsed):
            z_jobs[firsts[i]] = _z_indexes(header.z_shape, tables.device)
        with stage("entropy coding"):
            z_syms = dec.decode(z_jobs)
        y_jobs, y_means = [None] * firsts[-1], [None] * len(parsed)
        sizes = _groups([(h.height, h.width) for h, _, _ in parsed])
        for idx in sizes:
            header = parsed[idx[0]][0]
            z = torch.stack([z_syms[firsts[i]] for i in idx]).view(len(idx), *header.z_shape)
            with stage("hyper"):
                scales, means = model.hyper_decode(model.entropy_z.dequantize(z.to(device)))
                y_idx = (scale_indexes(scales) + model.num_z_tables).to(tables.device)
            for j, i in enumerate(idx):
                y_means[i] = means[j]
                flat = y_idx[j].flatten()
                for s, (_, part) in enumerate(_split(flat, flat, firsts[i + 1] - firsts[i])):
                    y_jobs[firsts[i] + s] = part
        with stage("entropy coding"):
            y_syms = dec.decode(y_jobs)
            dec.finish()
        out = [None] * len(parsed)
        for idx in sizes:
            header = parsed[idx[0]][0]
            y_hat = torch.stack([
                torch.cat(y_syms[firsts[i] : firsts[i + 1]]).view(*header.y_shape).to(device)
                + y_means[i] for i in idx]).float()
            with stage("synthesis"):
                dtype = precision.resolve(self.precision, device)
                with precision.transforms_in(dtype, device):
                    x_hat = model.synthesize(precision.layout(y_hat, dtype))
                x_hat = x_hat[:, :, : header.height, : header.width]
            for j, i in enumerate(idx):
                out[i] = x_hat[j]
        return out

    def _open(self, data: bytes, device: torch.device):
        header, views = format.unpack(data)
        if header.height * header.width > self.max_pixels:
            raise CodecError(f"the stream claims a {header.height}x{header.width} image, above "
                             f"this codec's max_pixels={self.max_pixels}")
        model = self._model_for(header, device)
        hp, wp = _padded(header.height), _padded(header.width)
        c = model.config
        expect_y, expect_z = (c.M, hp // 16, wp // 16), (c.N, hp // 64, wp // 64)
        if header.y_shape != expect_y or header.z_shape != expect_z:
            raise CodecError(f"latent shapes {header.y_shape}, {header.z_shape} do not match a "
                             f"{header.height}x{header.width} image ({expect_y}, {expect_z})")
        if len(views) > max(1, math.prod(expect_y) // 4096):
            raise CodecError(f"too many streams ({len(views)}) for the latent size")
        return header, model, views


def _refined(model: MeanScaleHyperprior, x: torch.Tensor, refine: Refine
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Refined latents (`engine.refine`); its gradients need a break from inference mode."""
    from .refine import refine_latents

    with torch.inference_mode(False), torch.enable_grad():
        y, z, _ = refine_latents(model, x.clone(), refine)
    return y, z


def _param_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _padded(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _pad(x: torch.Tensor) -> torch.Tensor:
    """Replicate the last row and column up to a multiple of ALIGN (cropped after decoding)."""
    h, w = x.shape[2:]
    ph, pw = _padded(h) - h, _padded(w) - w
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


def _z_indexes(shape: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """z's table index of every element in (C, H, W) order: its channel."""
    c, h, w = shape
    return torch.arange(c, dtype=torch.int32, device=device).repeat_interleave(h * w)


def _split(values: torch.Tensor, indexes: torch.Tensor, n: int
           ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """n equal runs of y for n streams: run s is [floor(s len / n), floor((s + 1) len / n))."""
    cuts = [values.numel() * s // n for s in range(n + 1)]
    return [(values[a:e], indexes[a:e]) for a, e in zip(cuts, cuts[1:], strict=False)]


def _groups(keys: list) -> list[list[int]]:
    """Indexes grouped by equal key, in first-appearance order."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(tuple(k), []).append(i)
    return list(groups.values())
