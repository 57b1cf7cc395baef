"""The format in Pillow: `import engine.pillow` registers it, as format plugins such as
pillow-heif and pillow-avif-plugin do.

    import engine.pillow
    from PIL import Image

    img = Image.open("photo.nic")             # .size and .mode come from the header alone
    img.load()                                 # decodes (any shipped model)
    img.save("copy.nic", quality=3)            # encodes; drop_alpha=True discards an alpha channel

Files are recognised by the magic number, whatever their name; saving picks the format from the
`.nic` extension (or `format="NIC"`). Decoded images are 8-bit RGB.
"""

from __future__ import annotations

from typing import IO

from PIL import Image, ImageFile

from . import compress, decompress
from .codec import DEFAULT_QUALITY
from .format import MAGIC, SUFFIX, unpack
from .images import to_uint8

FORMAT = "NIC"


def _accept(prefix: bytes) -> bool:
    return prefix[: len(MAGIC)] == MAGIC


def _image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a stream's header, without decoding it; CodecError if damaged."""
    header = unpack(data)[0]
    return header.width, header.height


class NicImageFile(ImageFile.ImageFile):
    """Opening reads and checks the header; `load()` decodes (through `NicDecoder`)."""

    format = FORMAT
    format_description = "nicengine learned image codec"

    def _open(self) -> None:
        self._size = _image_size(self.fp.read())
        self._mode = "RGB"
        # A plain tuple (codec, extents, offset, args), as ImageFile.load reads tiles.
        self.tile = [(FORMAT, (0, 0, *self.size), 0, None)]


class NicDecoder(ImageFile.PyDecoder):
    """Decodes the whole stream at once: the codec needs all of it."""

    _pulls_fd = True

    def decode(self, buffer: bytes) -> tuple[int, int]:
        self.set_as_raw(to_uint8(decompress(self.fd.read())).tobytes())
        return -1, 0


def _save(im: Image.Image, fp: IO[bytes], filename: str | bytes) -> None:
    """`im.save(..., quality=Q, max_bytes=N, drop_alpha=False)`: the save() options reach the
    encoder here (`max_bytes`: the highest quality that fits, variable-rate models)."""
    options = im.encoderinfo
    fp.write(compress(im, quality=options.get("quality", DEFAULT_QUALITY),
                      drop_alpha=options.get("drop_alpha", False),
                      max_bytes=options.get("max_bytes")))


Image.register_open(FORMAT, NicImageFile, _accept)
Image.register_decoder(FORMAT, NicDecoder)
Image.register_save(FORMAT, _save)
Image.register_extension(FORMAT, SUFFIX)
