"""Reading and writing images: bad files refused with one clear line, results written back as they came in.

Design
- Two libraries, each for what it does best. Pillow *inspects*: opening a file reads only its header, so
  the format, the size (the decompression-bomb check comes before any pixel is decoded), the mode (palette?
  alpha?) and the EXIF orientation are known cheaply; and its full decode raises on truncated files, which
  some OpenCV decoders fill in silently. OpenCV *decodes*: with ``IMREAD_UNCHANGED`` it keeps the 16-bit
  samples and alpha channels of PNG and TIFF, which Pillow cuts to 8 bits or refuses. Where OpenCV cannot
  decode a file that Pillow can (other formats, or an 8-bit alpha channel OpenCV drops, as in grey+alpha
  TIFF), Pillow's 8-bit pixels are used.
- The file is read once; both libraries see the same bytes.
- ``read_image`` returns float32 pixels in [0, 1], grey (H, W) or RGB (H, W, 3), upright, and an ``ImageInfo``
  holding what ``write_image`` needs to give the result back in the bit depth and mode it came in, the
  original alpha channel included (untouched).
- Every write is atomic: the file is encoded in memory, written to a temporary file beside the target and
  renamed over it, so a crash or a failed encode never leaves a partial or missing result.
  ``atomic_write_bytes`` and ``atomic_write_text`` are for other modules too (downloads, tables).
"""

from __future__ import annotations

import glob
import io
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from bdn.errors import BdnError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageInfo",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_same_size",
    "default_max_pixels",
    "list_images",
    "quantise",
    "read_image",
    "write_image",
]

#: Suffixes (lower case) of the files bdn reads when it is given a folder or a glob pattern.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})

#: Largest image (width * height) read, unless ``max_pixels`` or BDN_MAX_PIXELS (environment) say otherwise.
DEFAULT_MAX_PIXELS = 2**28

_WRITE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".gif": "GIF",  # what bdn reads it can write back, so a batch keeps every input's format
    ".webp": "WEBP",
}
_MODES = {"L", "RGB", "RGBA", "LA", "P"}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_ALPHA_FORMATS = {"PNG", "TIFF", "BMP", "WEBP"}  # OpenCV writes 32-bit BMP with alpha
_PALETTE_FORMATS = {"PNG", "BMP", "TIFF", "GIF"}
_PALETTE_ONLY_FORMATS = {"GIF"}

# Pillow modes: which are grey, which carry alpha, which Pillow can give as 8-bit pixels.
_GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_EIGHT_BIT_MODES = _ALPHA_MODES | {"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}

# OpenCV applies a TIFF's orientation tag itself, even with IMREAD_UNCHANGED (it ignores EXIF in JPEG, PNG).
_OPENCV_ORIENTS = {"TIFF"}

# Leading bytes of the formats we read: a file that starts like an image but will not open is corrupt rather
# than "not an image" (a truncated TIFF, whose directory sits at the end, fails already in the header).
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGNATURES = (
    _PNG_SIGNATURE,
    b"\xff\xd8\xff",
    b"II*\x00",
    b"MM\x00*",
    b"II+\x00",
    b"MM\x00+",
    b"BM",
    b"GIF8",
)

_SUPPORTED = "bdn reads 8- and 16-bit integer images"
_EXIF_ORIENTATION = 0x0112
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601, as Pillow's convert("L")
_PILLOW_LOCK = threading.Lock()


@dataclass(frozen=True)
class ImageInfo:
    """What is needed to write a processed image back as it came in.

    dtype: 'uint8' or 'uint16' (the sample type of the file). mode: 'L', 'RGB', 'RGBA', 'LA' or 'P' (palette,
    read as RGB). alpha: the original alpha channel, upright, in its original dtype (read-only), or None.
    format: what the file held ('PNG', 'JPEG', 'TIFF', 'BMP', ...). path: where it came from.
    """

    dtype: str
    mode: str
    alpha: np.ndarray | None = field(default=None, compare=False, repr=False)
    format: str = ""
    path: str = ""


# ---------------------------------------- reading


def default_max_pixels() -> int:
    """The pixel limit for ``read_image``: BDN_MAX_PIXELS when set, else DEFAULT_MAX_PIXELS."""
    value = os.environ.get("BDN_MAX_PIXELS", "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:  # 0 or a negative limit would refuse every image
        raise BdnError(f"BDN_MAX_PIXELS: expected a whole number of pixels >= 1, got {value!r}")
    return limit


def read_image(path: str | Path, *, max_pixels: int | None = None, min_size: int = 1) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as float32 in [0, 1]: (H, W) grey or (H, W, 3) RGB, upright, alpha kept in the info.

    8- and 16-bit PNG and TIFF keep their depth (divided by 255 or 65535); palette images are read as RGB; the
    EXIF orientation is applied. The returned `ImageInfo` is what `write_image` needs to write a result back in
    the file's bit depth and mode, its alpha channel included.

    Parameters
    ----------
    path : str or pathlib.Path
        The image file (.png .jpg .jpeg .bmp .tif .tiff .gif .webp, and what else Pillow opens).
    max_pixels : int, optional
        The most pixels (width * height) read, checked from the header before any pixel is decoded. Default
        ``default_max_pixels()``: the environment's BDN_MAX_PIXELS when set, else ``DEFAULT_MAX_PIXELS`` (2**28).
    min_size : int, default 1
        The smallest side, in pixels, accepted.

    Returns
    -------
    pixels : numpy.ndarray
        float32 in [0, 1], (H, W) grey or (H, W, 3) RGB, upright.
    info : ImageInfo
        The file's sample type ('uint8' or 'uint16'), mode ('L', 'RGB', 'RGBA', 'LA' or 'P'), its alpha channel
        (read-only, upright, in its own dtype) or None, format ('PNG', 'JPEG', ...) and path.

    Raises
    ------
    BdnError
        One line starting with the file name, for a missing path, a folder, an empty file, a file that is not an
        image, a truncated or corrupt one, one with more than `max_pixels` pixels, one smaller than `min_size` on
        a side, one holding several frames (multi-page TIFF, animated GIF, PNG or WebP: refused, naming the count,
        rather than cut to its first frame), and sample types other than 8- or 16-bit integers.

    Examples
    --------
    >>> import numpy as np
    >>> import bdn
    >>> _ = bdn.write_image("ramp.png", np.linspace(0, 1, 48 * 64).reshape(48, 64))
    >>> pixels, info = bdn.read_image("ramp.png")
    >>> pixels.shape, pixels.dtype, pixels.min(), pixels.max()
    ((48, 64), dtype('float32'), np.float32(0.0), np.float32(1.0))
    >>> info.dtype, info.mode, info.format
    ('uint8', 'L', 'PNG')
    >>> bdn.read_image("ramp.png", min_size=64)
    Traceback (most recent call last):
    ...
    bdn.errors.BdnError: ramp.png: image too small: 64x48 pixels, the minimum is 64 on each side
    """
    path = Path(path)
    name = str(path)
    data = _read_file(path, name)
    limit = default_max_pixels() if max_pixels is None else max_pixels

    with _opened_with_pillow(data, name, limit, min_size) as pil:
        fmt = "JPEG" if pil.format == "MPO" else (pil.format or "unknown")
        has_alpha = pil.mode in _ALPHA_MODES or "transparency" in pil.info
        grey_source = pil.mode in _GREY_MODES or _png_colour_type(data) in (0, 4)
        samples = _decode_with_opencv(data)
        upright = fmt in _OPENCV_ORIENTS
        if samples is None or (has_alpha and not _has_alpha_channel(samples) and samples.dtype == np.uint8):
            samples = _pillow_samples(pil, name, has_alpha)
            upright = False
        orientation = 1 if upright else _orientation(pil)
        palette = pil.mode == "P"

    if samples.dtype not in (np.uint8, np.uint16):
        raise BdnError(f"{name}: unsupported sample type {samples.dtype} ({_SUPPORTED})")
    colour, alpha = _split_channels(samples, name, grey_source=grey_source, keep_alpha=has_alpha)
    colour, alpha = _upright(colour, orientation), None if alpha is None else _upright(alpha, orientation)
    if palette and colour.ndim == 2:
        colour = np.repeat(colour[..., None], 3, axis=2)

    if colour.ndim == 2:
        mode = "L" if alpha is None else "LA"
    else:
        mode = "RGBA" if alpha is not None else ("P" if palette else "RGB")
    if alpha is not None:
        alpha = np.ascontiguousarray(alpha)
        alpha.setflags(write=False)  # the info is frozen; its alpha must go back untouched
    pixels = colour.astype(np.float32, order="C") / np.float32(np.iinfo(colour.dtype).max)
    return pixels, ImageInfo(dtype=str(colour.dtype), mode=mode, alpha=alpha, format=fmt, path=name)


def _read_file(path: Path, name: str) -> bytes:
    if path.is_dir():
        raise BdnError(f"{name}: is a folder, not an image file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BdnError(f"{name}: no such file") from None
    except OSError as error:
        raise BdnError(f"{name}: cannot read ({error.strerror or error})") from error
    if not data:
        raise BdnError(f"{name}: empty file (0 bytes)")
    return data


@contextmanager
def _pillow_pixel_limit(limit: int | None) -> Iterator[None]:
    """Set Pillow's own decompression-bomb limit for a moment (a module global, hence the lock).

    Pillow refuses images above twice its default (~179 MP) and warns above ~89 MP whatever bdn's limit says;
    bdn's limit (BDN_MAX_PIXELS) must be the one that decides.
    """
    with _PILLOW_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


@contextmanager
def _opened_with_pillow(data: bytes, name: str, limit: int, min_size: int) -> Iterator[Image.Image]:
    """Open with Pillow, check the size from the header, then decode fully to prove the file is complete."""
    try:
        # Only the header is read here; our own size check follows at once. Pillow's warnings about broken
        # metadata are not shown: the file is either refused with one clear line or read.
        with _pillow_pixel_limit(None), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pil = Image.open(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as error:  # Pillow's parsers raise many types on bad data; all mean the same to a user
        known = data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
        if known:
            raise BdnError(f"{name}: truncated or corrupt image file") from error
        raise BdnError(f"{name}: not an image file (or a format bdn cannot read)") from error

    with pil:
        width, height = pil.size
        if width * height > limit:
            raise BdnError(
                f"{name}: too many pixels: {width}x{height} = {width * height:,}, over the limit of "
                f"{limit:,} (a decompression bomb?); set BDN_MAX_PIXELS to raise the limit"
            )
        if min(width, height) < min_size:
            raise BdnError(f"{name}: image too small: {width}x{height} pixels, the minimum is {min_size} on each side")
        frames = getattr(pil, "n_frames", 1)
        if frames > 1 and pil.format != "MPO":  # a camera's MPO JPEG: its first picture is the photo
            raise BdnError(
                f"{name}: holds {frames} frames (a multi-page or animated file); bdn denoises single images, so "
                "save each frame as its own file"
            )
        try:
            # Pillow checks sizes inside the file too (TIFF tiles, GIF frames): let them use our limit, and
            # turn its warning into a refusal like its error.
            with _pillow_pixel_limit(limit), warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                pil.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
            raise BdnError(
                f"{name}: too many pixels inside the file (over the limit of {limit:,}; a decompression bomb?)"
            ) from error
        except MemoryError:
            raise
        except Exception as error:
            raise BdnError(f"{name}: truncated or corrupt image file") from error
        yield pil


def _png_colour_type(data: bytes) -> int | None:
    """The colour type in a PNG header (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA), else None.

    Needed because Pillow reports 16-bit grey+alpha PNGs as 'RGBA'.
    """
    if data.startswith(_PNG_SIGNATURE) and len(data) > 25:
        return data[25]
    return None


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    """Decode keeping bit depth and alpha; samples in RGB(A) order, or None where OpenCV cannot."""
    try:
        samples = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        return None
    if samples is None:
        return None
    if samples.ndim == 3 and samples.shape[2] == 3:
        samples = cv2.cvtColor(samples, cv2.COLOR_BGR2RGB)
    elif samples.ndim == 3 and samples.shape[2] == 4:
        samples = cv2.cvtColor(samples, cv2.COLOR_BGRA2RGBA)
    return samples


def _has_alpha_channel(samples: np.ndarray) -> bool:
    return samples.ndim == 3 and samples.shape[2] in (2, 4)


def _pillow_samples(pil: Image.Image, name: str, has_alpha: bool) -> np.ndarray:
    """Pillow's pixels, for 8-bit modes only (Pillow cuts 16-bit colour to 8 bits)."""
    if pil.mode not in _EIGHT_BIT_MODES:
        raise BdnError(f"{name}: unsupported sample type (Pillow mode {pil.mode}; {_SUPPORTED})")
    grey = pil.mode in _GREY_MODES
    target = ("L" if grey else "RGB") + ("A" if has_alpha else "")
    return np.asarray(pil.convert(target))


def _split_channels(
    samples: np.ndarray, name: str, *, grey_source: bool, keep_alpha: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Separate (H, W) grey or (H, W, 3) RGB from the alpha channel (RGB(A) order in)."""
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    if channels == 1:
        colour, alpha = samples.reshape(samples.shape[:2]), None
    elif channels == 2:
        colour, alpha = samples[..., 0], samples[..., 1]
    elif channels == 3:
        colour, alpha = samples, None
    elif channels == 4:
        # Decoders expand grey+alpha to four channels with R = G = B.
        colour, alpha = (samples[..., 0] if grey_source else samples[..., :3]), samples[..., 3]
    else:
        raise BdnError(f"{name}: unsupported number of channels ({channels})")
    # A fourth channel the header does not call alpha (e.g. padding in 32-bit BMP) is not kept.
    return colour, alpha if keep_alpha else None


def _orientation(pil: Image.Image) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about EXIF it cannot parse; we then ignore it
            value = int(pil.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # broken EXIF must not make a readable image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _upright(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to (H, W, ...) samples, as Pillow's ImageOps.exif_transpose does."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(array, -1)  # stored rotated 90 degrees anticlockwise: turn it clockwise
    if orientation == 7:
        return array.swapaxes(0, 1)[::-1, ::-1]
    if orientation == 8:
        return np.rot90(array, 1)
    return array


# ---------------------------------------- writing


def write_image(
    path: str | Path, pixels: np.ndarray, info: ImageInfo | None = None, text: Mapping[str, str] | None = None
) -> Path:
    """Write float pixels in [0, 1] (clipped) atomically, in the bit depth and mode of ``info``.

    The format follows the extension. The file is encoded in memory, written to a temporary file beside the
    target and renamed over it, so a crash or a failed encode never leaves a partial or missing result.
    Samples are ``rint(clip(x, 0, 1) * max)`` (see `quantise`); JPEG and WebP are written at quality 95.

    Parameters
    ----------
    path : str or pathlib.Path
        The file to write: .png .jpg .jpeg .bmp .tif .tiff .gif .webp. Parent folders are created.
    pixels : numpy.ndarray
        Float, (H, W) grey or (H, W, 3) RGB, finite; clipped to [0, 1].
    info : ImageInfo, optional
        What `read_image` returned for the input. With it: 16-bit stays 16-bit where the format holds it (PNG,
        TIFF; the others get 8-bit); 'L' turns colour pixels grey, 'RGB' stacks grey ones; 'RGBA'/'LA' get the
        original alpha back untouched when its size matches the pixels (it is dropped otherwise, and in JPEG and
        GIF); 'P' is written with an adaptive 256-colour palette where the format has palettes (GIF always is).
        16-bit grey+alpha, which neither OpenCV nor Pillow can encode, is written as 16-bit RGBA with R = G = B.
        Without it: 8-bit, grey or RGB by shape.
    text : mapping of str to str, optional
        Text to carry inside the file where the format has a place for it: PNG `tEXt` chunks (keywords of 1-79
        Latin-1 characters), added after the header without re-encoding the pixels. Other formats ignore it.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    BdnError
        For an unknown extension, an image the format cannot encode, and a file or folder that cannot be written
        (the message names the path).
    ValueError
        For pixels that are not float, not (H, W) or (H, W, 3), empty, NaN or infinite, and for an `info` with a
        dtype or mode it cannot honour: a caller's bug, not a user's mistake.

    Examples
    --------
    >>> import numpy as np
    >>> import bdn
    >>> from bdn.io import ImageInfo
    >>> pixels = np.random.default_rng(0).random((32, 32, 3))
    >>> bdn.write_image("out/colour.png", pixels).name  # out/ is created
    'colour.png'
    >>> _ = bdn.write_image("deep.tif", pixels, ImageInfo(dtype="uint16", mode="RGB"))
    >>> noisy, info = bdn.read_image("deep.tif")
    >>> _ = bdn.write_image("deep_denoised.tif", bdn.denoise(noisy, method="median"), info)  # 16-bit kept
    >>> bdn.read_image("deep_denoised.tif")[1].dtype
    'uint16'
    >>> _ = bdn.write_image("deep_denoised.jpg", bdn.denoise(noisy, method="median"), info)  # JPEG: 8-bit
    >>> bdn.read_image("deep_denoised.jpg")[1].dtype
    'uint8'
    """
    path = Path(path)
    suffix = path.suffix.lower()
    fmt = _WRITE_FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(_WRITE_FORMATS))
        raise BdnError(f"{path}: unknown image extension {suffix or '(none)'!r} (use {known})")
    image = _checked_pixels(pixels)
    if info is not None and (info.dtype not in ("uint8", "uint16") or info.mode not in _MODES):
        raise ValueError(f"write_image got an ImageInfo it cannot honour: {info}")

    dtype = np.dtype(info.dtype if info else "uint8")
    if fmt not in _SIXTEEN_BIT_FORMATS:
        dtype = np.dtype("uint8")
    mode = info.mode if info else ("L" if image.ndim == 2 else "RGB")
    if mode == "P" and fmt not in _PALETTE_FORMATS:
        mode = "RGB"
    if fmt in _PALETTE_ONLY_FORMATS:
        mode = "P"
    if mode == "P":
        dtype = np.dtype("uint8")

    alpha = None
    if mode in ("RGBA", "LA"):
        alpha = _alpha_for(info, image.shape[:2], dtype) if fmt in _ALPHA_FORMATS else None
        if alpha is None:
            mode = mode[:-1]

    image = _as_colour(image) if mode in ("RGB", "RGBA", "P") else _as_grey(image)
    encoded = _encode(quantise(image, dtype), alpha, mode, fmt, suffix, path)
    if text and fmt == "PNG":
        encoded = png_with_text(encoded, text)
    return atomic_write_bytes(path, encoded)


def png_with_text(data: bytes, text: Mapping[str, str]) -> bytes:
    """A PNG file's bytes with `tEXt` chunks (keyword, Latin-1 text) inserted after its header chunk (IHDR); the
    image data is untouched. ValueError for bytes that are not a PNG or a keyword PNG does not allow."""
    import struct
    import zlib

    if not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("png_with_text: not a PNG file")
    header_end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # signature, length + type, data, CRC
    chunks = []
    for keyword, value in text.items():
        key = keyword.encode("latin-1")
        if not 1 <= len(key) <= 79 or b"\x00" in key:
            raise ValueError(f"png_with_text: keyword {keyword!r} must be 1-79 Latin-1 characters")
        body = b"tEXt" + key + b"\x00" + str(value).encode("latin-1", errors="replace")
        chunks.append(struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF))
    return data[:header_end] + b"".join(chunks) + data[header_end:]


def quantise(pixels: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """The integer samples write_image stores: rint(clip(x, 0, 1) * max) in float32, max 255 or 65535.

    float32, not float64: a value a hair from .5 rounds as every saved file of bdn's has rounded it
    (``bdn.tensors.to_8bit`` gives the same samples for tensors).
    """
    image = np.clip(pixels, 0.0, 1.0).astype(np.float32, copy=False)
    return np.rint(image * np.float32(np.iinfo(dtype).max)).astype(dtype)


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    """Float (H, W) or (H, W, 3), finite, clipped to [0, 1]. Wrong input here is a bug, hence ValueError."""
    array = np.asarray(pixels)
    if array.dtype.kind != "f":
        raise ValueError(f"write_image expects float pixels in [0, 1], got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or array.size == 0:
        raise ValueError(f"write_image expects (H, W) or (H, W, 3) pixels, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("write_image got pixels that are NaN or infinite")
    return np.clip(array, 0.0, 1.0).astype(np.float32, copy=False)


def _alpha_for(info: ImageInfo | None, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """The original alpha, in the output's sample type, or None if there is none or it no longer fits."""
    if info is None or info.alpha is None or info.alpha.shape != tuple(shape):
        return None
    alpha = info.alpha
    if alpha.dtype == dtype:
        return alpha
    if alpha.dtype == np.uint16:  # 16-bit alpha into an 8-bit format
        return np.rint(alpha / 257.0).astype(np.uint8)
    return alpha.astype(np.uint16) * np.uint16(257)


def _as_colour(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def _as_grey(image: np.ndarray) -> np.ndarray:
    return image @ _LUMA_WEIGHTS if image.ndim == 3 else image


def _encode(samples: np.ndarray, alpha: np.ndarray | None, mode: str, fmt: str, suffix: str, path: Path) -> bytes:
    """Encode in memory: Pillow for palettes and 8-bit grey+alpha, OpenCV for everything else."""
    try:
        if mode == "P":
            return _pillow_bytes(Image.fromarray(samples).quantize(colors=256), fmt)
        if mode == "LA" and samples.dtype == np.uint8 and fmt in ("PNG", "TIFF"):
            return _pillow_bytes(Image.fromarray(np.dstack([samples, alpha])), fmt)
        if mode == "LA":  # 16-bit, BMP or WebP grey+alpha: no encoder has it; RGBA with R = G = B keeps all
            samples, mode = _as_colour(samples), "RGBA"
        if mode == "RGBA":
            samples = cv2.cvtColor(np.dstack([samples, alpha]), cv2.COLOR_RGBA2BGRA)
        elif samples.ndim == 3:
            samples = cv2.cvtColor(samples, cv2.COLOR_RGB2BGR)
        params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, 95], "WEBP": [cv2.IMWRITE_WEBP_QUALITY, 95]}.get(fmt, [])
        ok, buffer = cv2.imencode(suffix, samples, params)
    except (cv2.error, OSError, ValueError) as error:
        raise BdnError(f"{path}: could not encode the image as {fmt} ({error})") from error
    if not ok:
        raise BdnError(f"{path}: could not encode the image as {fmt}")
    return buffer.tobytes()


def _pillow_bytes(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


# ---------------------------------------- atomic files


_TMP = ".tmp"  # the suffix of atomic_write_bytes's temporary files


def _new_file_mode() -> int:
    """The permissions a new file gets (0o666 less the umask), read at the time of the write and without changing
    the umask where the OS tells it (Linux's /proc); elsewhere the umask is set and put back at once."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a partial one.

    Writes a temporary file in the same folder (hidden, '.<name>.*.tmp'), syncs it to disk and renames it over
    the target; on any failure the temporary file is removed. Parent folders are created; an existing file's
    permissions are kept. OS errors become BdnError naming the path.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Temporary files are created private (0600); the finished file gets the permissions any new file would.
        mode = path.stat().st_mode & 0o7777 if path.is_file() else _new_file_mode()
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, prefix=f".{path.name}.", suffix=_TMP) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, mode)
        os.replace(tmp_name, path)
        tmp_name = None
    except OSError as error:
        raise BdnError(f"{path}: cannot write ({error.strerror or error})") from error
    finally:
        if tmp_name is not None:
            with suppress(OSError):
                os.unlink(tmp_name)
    _sync_folder(path.parent)
    return path


def remove_stale_temporaries(path: str | Path) -> list[tuple[Path, int]]:
    """Remove the temporary files an interrupted `atomic_write_bytes` of `path` left beside it (its own naming,
    '.<name>.XXXXXXXX.tmp', and nothing else); returns (file, bytes) of each removed. Call it before writing
    `path` again: a write of the same file still in progress elsewhere would lose its temporary file."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(_TMP))
    removed = []
    with suppress(OSError):
        for entry in path.parent.iterdir():
            if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink():
                with suppress(OSError):
                    size = entry.stat().st_size
                    entry.unlink()
                    removed.append((entry, size))
    return removed


def check_writable_folder(folder: str | Path) -> None:
    """Create `folder` if need be and prove a file can be made in it; BdnError naming it otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bdn-write-check.", suffix=_TMP):
            pass
    except OSError as error:
        raise BdnError(f"{folder}: cannot write there ({error.strerror or error})") from None


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """``atomic_write_bytes`` for text (written as given: no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); best effort, a failure here loses nothing already written."""
    if os.name != "posix":
        return
    with suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ---------------------------------------- inputs, pairs


def list_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files, folders and glob patterns into image paths, and say which inputs matched nothing.

    An existing file is kept as given, whatever its extension (``read_image`` then reports it if it is not an
    image). A folder gives its image files by extension, sorted, not recursive, hidden files skipped. A
    pattern is expanded with ``glob.glob(recursive=True)``, sorted, image extensions only. Returns (paths in
    order without duplicates, one-line problems such as "nope/*.png: no images match" or "missing.png: no
    such file or folder").
    """
    paths: list[Path] = []
    problems: list[str] = []
    seen: set[Path] = set()
    for item in inputs:
        given = Path(item)
        text = str(item)
        if given.is_file():
            found = [given]
        elif given.is_dir():
            found = sorted(p for p in given.iterdir() if _is_image_file(p) and not p.name.startswith("."))
            if not found:
                problems.append(f"{text}: no images in this folder")
        elif any(char in text for char in "*?["):
            found = [Path(p) for p in sorted(glob.glob(text, recursive=True)) if _is_image_file(Path(p))]
            if not found:
                problems.append(f"{text}: no images match")
        else:
            found = []
            problems.append(f"{text}: no such file or folder")
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                paths.append(path)
    return paths, problems


def _is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()


def check_same_size(noisy: np.ndarray, clean: np.ndarray, noisy_name: str | Path, clean_name: str | Path) -> None:
    """Refuse a noisy/clean pair whose height and width differ (sizes quoted as width x height)."""
    if noisy.shape[:2] != clean.shape[:2]:
        raise BdnError(f"{noisy_name} and {clean_name} differ in size: {_size_text(noisy)} vs {_size_text(clean)}")


def _size_text(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def read_json(path: str | Path, what: str = "pipeline config") -> object:
    """A JSON file's content; BdnError naming the file for a missing, unreadable or malformed one."""
    import json

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BdnError(f"{path}: no such {what}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise BdnError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise BdnError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from None
