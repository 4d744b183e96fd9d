"""Tests for bdn.io: images come back as they came in, bad files get one clear line, writes are atomic."""

import os
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

from bdn.errors import BdnError
from bdn.io import (
    IMAGE_EXTENSIONS,
    ImageInfo,
    atomic_write_bytes,
    atomic_write_text,
    check_same_size,
    list_images,
    read_image,
    write_image,
)

H, W = 48, 72  # non-square, so that a swapped height and width cannot pass unnoticed


def _rgb8() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut()[100 : 100 + H, 150 : 150 + W])


def _grey8() -> np.ndarray:
    return np.ascontiguousarray(data.camera()[100 : 100 + H, 150 : 150 + W])


def _to16(samples8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """16-bit samples whose low byte is random: any 8-bit step on the way would lose it."""
    return samples8.astype(np.uint16) * 256 + rng.integers(0, 256, samples8.shape, dtype=np.uint16)


def _cv2_write(path: Path, samples: np.ndarray) -> Path:
    """Write RGB(A) or grey samples with OpenCV (which wants BGR(A))."""
    if samples.ndim == 3:
        samples = cv2.cvtColor(samples, cv2.COLOR_RGB2BGR if samples.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), samples)
    return path


def _cv2_read(path: Path) -> np.ndarray:
    """Read back with OpenCV, unchanged, as RGB(A) or grey."""
    samples = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if samples.ndim == 3:
        samples = cv2.cvtColor(samples, cv2.COLOR_BGR2RGB if samples.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return samples


def _png(width: int, height: int, colour_type: int, depth: int, rows: bytes) -> bytes:
    """A minimal PNG: the header claims what we say, the data is what we give (rows with filter bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_lossless_round_trip_keeps_every_sample(tmp_path, rng, ext, depth, colour):
    samples = _rgb8() if colour else _grey8()
    if depth == 16:
        samples = _to16(samples, rng)
    scale = np.iinfo(samples.dtype).max
    src = _cv2_write(tmp_path / f"in{ext}", samples)

    pixels, info = read_image(src)

    assert pixels.dtype == np.float32 and pixels.shape == samples.shape
    assert pixels.min() >= 0 and pixels.max() <= 1
    np.testing.assert_array_equal(np.rint(pixels * scale), samples)
    expected = ImageInfo(
        dtype=f"uint{depth}",
        mode="RGB" if colour else "L",
        format="PNG" if ext == ".png" else "TIFF",
        path=str(src),
    )
    assert info == expected and info.alpha is None

    out = write_image(tmp_path / f"out{ext}", pixels, info)
    back = _cv2_read(out)
    assert back.dtype == samples.dtype
    np.testing.assert_array_equal(back, samples)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("depth", [8, 16])
def test_rgba_alpha_goes_back_untouched(tmp_path, rng, ext, depth):
    colour, alpha = _rgb8(), rng.integers(0, 256, (H, W), dtype=np.uint8)
    if depth == 16:
        colour, alpha = _to16(colour, rng), _to16(alpha, rng)
    scale = np.iinfo(colour.dtype).max
    src = _cv2_write(tmp_path / f"in{ext}", np.dstack([colour, alpha]))

    pixels, info = read_image(src)

    assert pixels.shape == (H, W, 3) and info.mode == "RGBA" and info.dtype == f"uint{depth}"
    assert info.alpha.dtype == alpha.dtype and not info.alpha.flags.writeable
    np.testing.assert_array_equal(info.alpha, alpha)
    np.testing.assert_array_equal(np.rint(pixels * scale), colour)

    out = write_image(tmp_path / f"out{ext}", 1 - pixels, info)  # "processed" colour, same alpha
    back = _cv2_read(out)
    assert back.shape == (H, W, 4) and back.dtype == alpha.dtype
    np.testing.assert_array_equal(back[..., 3], alpha)
    np.testing.assert_array_equal(back[..., :3], scale - colour)


def test_alpha_kept_in_bmp_and_dropped_where_it_cannot_go(tmp_path, rng):
    alpha = rng.integers(0, 256, (H, W), dtype=np.uint8)
    pixels, info = read_image(_cv2_write(tmp_path / "in.png", np.dstack([_rgb8(), alpha])))

    bmp = _cv2_read(write_image(tmp_path / "out.bmp", pixels, info))
    np.testing.assert_array_equal(bmp[..., 3], alpha)
    assert _cv2_read(write_image(tmp_path / "out.jpg", pixels, info)).shape == (H, W, 3)
    # a crop no longer matches the alpha: written without one rather than with a wrong one
    assert _cv2_read(write_image(tmp_path / "crop.png", pixels[:10], info)).shape == (10, W, 3)


@pytest.mark.parametrize(("ext", "mode"), [(".png", "P"), (".bmp", "P"), (".tif", "P"), (".jpg", "RGB")])
def test_palette_image_reads_as_rgb_and_writes_back_as_palette(tmp_path, ext, mode):
    palette_image = Image.fromarray(_rgb8()).quantize(64)
    palette_image.save(tmp_path / "in.png")
    expected = np.asarray(palette_image.convert("RGB"))

    pixels, info = read_image(tmp_path / "in.png")

    assert pixels.shape == (H, W, 3) and info.mode == "P" and info.dtype == "uint8" and info.alpha is None
    np.testing.assert_array_equal(np.rint(pixels * 255), expected)

    out = write_image(tmp_path / f"out{ext}", pixels, info)
    with Image.open(out) as written:
        assert written.mode == mode
        rgb = np.asarray(written.convert("RGB"))
    if mode == "P":  # 64 colours fit an adaptive 256-colour palette exactly
        np.testing.assert_array_equal(rgb, expected)
    else:
        assert peak_signal_noise_ratio(expected, rgb, data_range=255) > 35


def test_palette_with_transparency_reads_as_rgba(tmp_path):
    palette_image = Image.fromarray(_rgb8()).quantize(64)
    palette_image.save(tmp_path / "in.png", transparency=0)

    pixels, info = read_image(tmp_path / "in.png")

    assert pixels.shape == (H, W, 3) and info.mode == "RGBA"
    np.testing.assert_array_equal(info.alpha == 0, np.asarray(palette_image) == 0)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_grey_with_alpha_8_bit(tmp_path, rng, ext):
    grey, alpha = _grey8(), rng.integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(np.dstack([grey, alpha])).save(tmp_path / f"in{ext}")  # Pillow writes 'LA'

    pixels, info = read_image(tmp_path / f"in{ext}")

    assert pixels.shape == (H, W) and info.mode == "LA" and info.dtype == "uint8"
    np.testing.assert_array_equal(np.rint(pixels * 255), grey)
    np.testing.assert_array_equal(info.alpha, alpha)

    out = write_image(tmp_path / f"out{ext}", pixels, info)
    with Image.open(out) as written:
        assert written.mode == "LA"
        np.testing.assert_array_equal(np.asarray(written), np.dstack([grey, alpha]))


def test_grey_with_alpha_16_bit_png(tmp_path, rng):
    grey, alpha = _to16(_grey8(), rng), _to16(rng.integers(0, 256, (H, W), dtype=np.uint8), rng)
    rows = np.dstack([grey, alpha]).astype(">u2").reshape(H, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)  # filter byte 0 before each row
    (tmp_path / "in.png").write_bytes(_png(W, H, colour_type=4, depth=16, rows=raw))

    pixels, info = read_image(tmp_path / "in.png")

    assert pixels.shape == (H, W) and info.mode == "LA" and info.dtype == "uint16"
    np.testing.assert_array_equal(np.rint(pixels * 65535), grey)
    np.testing.assert_array_equal(info.alpha, alpha)
    # No encoder at hand writes 16-bit grey+alpha: RGBA with R = G = B keeps every sample.
    back = _cv2_read(write_image(tmp_path / "out.png", pixels, info))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, np.dstack([grey, grey, grey, alpha]))


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_jpeg_round_trip_is_close(tmp_path, colour):
    clean = (data.astronaut() if colour else data.camera()).astype(np.float32) / 255
    out = write_image(tmp_path / "photo.jpeg", clean)
    pixels, info = read_image(out)
    assert info == ImageInfo(dtype="uint8", mode="RGB" if colour else "L", format="JPEG", path=str(out))
    assert peak_signal_noise_ratio(clean, pixels, data_range=1.0) > 35


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "rgb"])
def test_bmp_round_trip_is_exact(tmp_path, colour):
    samples = _rgb8() if colour else _grey8()
    pixels, info = read_image(_cv2_write(tmp_path / "in.bmp", samples))
    assert info.format == "BMP" and info.mode == ("RGB" if colour else "L")
    np.testing.assert_array_equal(_cv2_read(write_image(tmp_path / "out.bmp", pixels, info)), samples)


@pytest.mark.parametrize("ext", [".jpg", ".bmp"])
def test_16_bit_into_an_8_bit_format_writes_8_bit(tmp_path, ext):
    pixels = _rgb8().astype(np.float32) / 255
    back = _cv2_read(write_image(tmp_path / f"out{ext}", pixels, ImageInfo(dtype="uint16", mode="RGB")))
    assert back.dtype == np.uint8 and back.shape == (H, W, 3)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_gif_and_webp_read_and_write_back(tmp_path, fmt):
    source = Image.fromarray(_rgb8()).quantize(64) if fmt == "GIF" else Image.fromarray(_rgb8())
    path = tmp_path / f"in.{fmt.lower()}"
    if fmt == "WEBP":
        source.save(path, lossless=True)
    else:
        source.save(path)
    expected = np.asarray(source.convert("RGB"))

    pixels, info = read_image(path)

    assert info.format == fmt and info.mode == ("P" if fmt == "GIF" else "RGB")
    np.testing.assert_array_equal(np.rint(pixels * 255), expected)
    out = write_image(tmp_path / f"out.{fmt.lower()}", pixels, info)
    with Image.open(out) as written:
        assert written.format == fmt and written.mode == ("P" if fmt == "GIF" else "RGB")
        rgb = np.asarray(written.convert("RGB"))
    if fmt == "GIF":  # 64 colours fit the 256-colour palette exactly
        np.testing.assert_array_equal(rgb, expected)
    else:  # lossy WebP at quality 95
        assert peak_signal_noise_ratio(expected, rgb, data_range=255) > 35


@pytest.mark.parametrize("ext", sorted(IMAGE_EXTENSIONS))
def test_every_extension_read_can_be_written(tmp_path, ext):
    # a batch keeps each input's name and format, so what bdn reads it must be able to write back
    pixels = _rgb8().astype(np.float32) / 255
    back, info = read_image(write_image(tmp_path / f"out{ext}", pixels))
    assert back.shape == (H, W, 3) and info.dtype == "uint8"
    assert np.abs(back - pixels).mean() < 0.02  # exact for the lossless ones, close for the rest


def test_pillow_pixels_where_opencv_cannot_decode(tmp_path, monkeypatch):
    rgb = _cv2_write(tmp_path / "rgb.png", _rgb8())
    Image.fromarray(_rgb8()).quantize(64).save(tmp_path / "pal.png", transparency=0)
    _cv2_write(tmp_path / "deep.png", _grey8().astype(np.uint16) * 257)
    expected = {name: read_image(tmp_path / name) for name in ("rgb.png", "pal.png")}

    monkeypatch.setattr(cv2, "imdecode", lambda *args: None)
    for name, (pixels, info) in expected.items():
        fallback_pixels, fallback_info = read_image(tmp_path / name)
        np.testing.assert_array_equal(fallback_pixels, pixels)
        np.testing.assert_array_equal(fallback_info.alpha, info.alpha)
        assert fallback_info == info
    assert read_image(rgb)[1].mode == "RGB"
    with pytest.raises(BdnError, match="unsupported sample type"):  # Pillow would cut 16 bits to 8
        read_image(tmp_path / "deep.png")


# ------------------------------------------------------------------------------------------ orientation


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_pixels(tmp_path, fmt, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"in.{fmt.lower()}"
    # TIFF keeps the tag in its own directory, PNG in an eXIf chunk; OpenCV honours the first by itself.
    Image.fromarray(_rgb8()).save(path, exif=exif if fmt == "TIFF" else exif.tobytes())
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))

    pixels, _ = read_image(path)

    np.testing.assert_array_equal(np.rint(pixels * 255), expected)


@pytest.mark.parametrize(("orientation", "turns"), [(6, -1), (8, 1)])
def test_exif_rotated_jpeg(tmp_path, orientation, turns):
    stored = np.full((H, W, 3), 255, np.uint8)
    stored[:16, :16] = (255, 0, 0)  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(tmp_path / "in.jpg", exif=exif.tobytes(), quality=95)

    pixels, info = read_image(tmp_path / "in.jpg")

    assert pixels.shape == (W, H, 3) and info.format == "JPEG"
    upright = np.rot90(stored, turns).astype(np.float32) / 255  # 6: turn clockwise; 8: anticlockwise
    assert peak_signal_noise_ratio(upright, pixels, data_range=1.0) > 30
    corner = pixels[:8, -8:] if orientation == 6 else pixels[-8:, :8]  # where the mark must land
    assert corner[..., 0].mean() > 0.9 and corner[..., 1].mean() < 0.1


# ------------------------------------------------------------------------------------------ bad input


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _text_file(path: Path) -> Path:
    path.write_text("this is not an image\n" * 10)
    return path


def _truncated(path: Path, samples: np.ndarray) -> Path:
    _cv2_write(path, samples)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _scrambled_png(path: Path) -> Path:
    whole = bytearray(_cv2_write(path, _rgb8()).read_bytes())
    middle = len(whole) // 2
    whole[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(whole))
    return path


def _int32_tiff(path: Path) -> Path:
    Image.fromarray(_grey8().astype(np.int32) * 1000).save(path)
    return path


def _bomb(path: Path) -> Path:
    # The header claims 100000 x 100000 grey pixels (10 GB decoded); the data is one zero row.
    path.write_bytes(_png(100_000, 100_000, colour_type=0, depth=8, rows=bytes(100_001)))
    return path


BAD_INPUTS = {
    "missing": (lambda d: d / "missing.png", {}, "no such file"),
    "folder": (lambda d: _folder(d / "folder.png"), {}, "is a folder"),
    "empty": (lambda d: _empty(d / "empty.png"), {}, "empty file"),
    "text": (lambda d: _text_file(d / "notes.png"), {}, "not an image"),
    "truncated png": (lambda d: _truncated(d / "cut.png", _rgb8()), {}, "truncated or corrupt"),
    "truncated jpeg": (lambda d: _truncated(d / "cut.jpg", _rgb8()), {}, "truncated or corrupt"),
    "truncated tiff": (lambda d: _truncated(d / "cut.tif", _rgb8()), {}, "truncated or corrupt"),
    "corrupt png": (lambda d: _scrambled_png(d / "bad.png"), {}, "truncated or corrupt"),
    "too small": (lambda d: _cv2_write(d / "tiny.png", _grey8()[:4, :6]), {"min_size": 8}, "too small: 6x4"),
    "too many": (
        lambda d: _cv2_write(d / "big.png", _grey8()),
        {"max_pixels": 1000},
        "too many pixels: 72x48",
    ),
    "bomb": (lambda d: _bomb(d / "bomb.png"), {}, "too many pixels: 100000x100000"),
    "float tiff": (
        lambda d: _cv2_write(d / "float.tif", _grey8().astype(np.float32) / 255),
        {},
        "unsupported sample type float32",
    ),
    "int32 tiff": (lambda d: _int32_tiff(d / "int.tif"), {}, "unsupported sample type int32"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gives_one_clear_line(tmp_path, case):
    make, kwargs, phrase = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(BdnError) as excinfo:
        read_image(path, **kwargs)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: ") and phrase in message and "\n" not in message


def test_too_small_says_the_minimum(tmp_path):
    path = _cv2_write(tmp_path / "tiny.png", _grey8()[:4, :6])
    with pytest.raises(BdnError, match=r"tiny.png: image too small: 6x4 pixels, the minimum is 8 on each side"):
        read_image(path, min_size=8)
    assert read_image(path, min_size=4)[0].shape == (4, 6)


def test_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded a file that the header already condemned")

    monkeypatch.setattr(cv2, "imdecode", must_not_decode)
    monkeypatch.setattr(ImageFile.ImageFile, "load", must_not_decode)
    with pytest.raises(BdnError, match=r"bomb.png: too many pixels: 100000x100000 = 10,000,000,000"):
        read_image(_bomb(tmp_path / "bomb.png"))


def test_pixel_limit_from_the_environment(tmp_path, monkeypatch):
    path = _cv2_write(tmp_path / "in.png", _grey8())
    monkeypatch.setenv("BDN_MAX_PIXELS", str(H * W - 1))
    with pytest.raises(BdnError, match="too many pixels"):
        read_image(path)
    assert read_image(path, max_pixels=H * W)[0].shape == (H, W)  # the argument wins
    monkeypatch.setenv("BDN_MAX_PIXELS", "lots")
    with pytest.raises(BdnError, match="BDN_MAX_PIXELS: expected a whole number"):
        read_image(path)


def test_our_limit_decides_not_pillows(tmp_path, monkeypatch):
    path = _cv2_write(tmp_path / "in.png", _grey8())
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this image
    pixels, _ = read_image(path)
    assert pixels.shape == (H, W)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored


@pytest.mark.parametrize("alarm", ["warning", "error"])
def test_pillows_own_bomb_alarm_becomes_bdn_error(tmp_path, monkeypatch, alarm):
    def load(self):
        if alarm == "warning":
            warnings.warn("too big", Image.DecompressionBombWarning, stacklevel=2)
        raise Image.DecompressionBombError("too big")

    path = _cv2_write(tmp_path / "in.png", _grey8())
    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    with pytest.raises(BdnError, match="in.png: too many pixels inside the file"):
        read_image(path)


# ------------------------------------------------------------------------------------------ writing


def test_write_without_info_is_8_bit_by_shape_and_clips(tmp_path):
    grey = np.linspace(-0.5, 1.5, H * W, dtype=np.float32).reshape(H, W)
    out = write_image(tmp_path / "a" / "b" / "grey.png", grey)  # parent folders are created
    assert out == tmp_path / "a" / "b" / "grey.png"
    back = _cv2_read(out)
    assert back.dtype == np.uint8 and back.shape == (H, W)
    np.testing.assert_array_equal(back, np.rint(np.clip(grey, 0, 1) * 255))
    assert _cv2_read(write_image(tmp_path / "rgb.png", np.dstack([grey] * 3))).shape == (H, W, 3)


def test_write_converts_to_the_mode_it_came_in(tmp_path):
    rgb = _rgb8().astype(np.float32) / 255
    grey = _cv2_read(write_image(tmp_path / "grey.png", rgb, ImageInfo(dtype="uint8", mode="L")))
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    assert grey.shape == (H, W)
    assert np.abs(grey.astype(int) - np.rint(luma * 255)).max() <= 1

    stacked = _cv2_read(write_image(tmp_path / "rgb.png", luma, ImageInfo(dtype="uint8", mode="RGB")))
    assert stacked.shape == (H, W, 3)
    assert (stacked == stacked[..., :1]).all()


@pytest.mark.parametrize(
    "pixels",
    [np.zeros((H, W), np.uint8), np.zeros((H, W, 1), np.float32), np.full((H, W), np.nan, np.float32)],
    ids=["integers", "one channel", "nan"],
)
def test_write_refuses_pixels_that_are_a_bug(tmp_path, pixels):
    with pytest.raises(ValueError):
        write_image(tmp_path / "out.png", pixels)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("info", [ImageInfo(dtype="float32", mode="L"), ImageInfo(dtype="uint8", mode="CMYK")])
def test_write_refuses_an_info_it_cannot_honour(tmp_path, info):
    with pytest.raises(ValueError, match="cannot honour"):
        write_image(tmp_path / "out.png", np.zeros((H, W), np.float32), info)


def test_unknown_extension_writes_nothing(tmp_path):
    with pytest.raises(BdnError, match=r"out/result.xyz: unknown image extension '.xyz'"):
        write_image(tmp_path / "out" / "result.xyz", np.zeros((H, W), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_failed_encode_leaves_the_old_file_and_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / "result.png"
    target.write_bytes(b"old result")

    def broken(*args, **kwargs):
        raise cv2.error("encoder exploded")

    monkeypatch.setattr(cv2, "imencode", broken)
    with pytest.raises(BdnError, match="result.png: could not encode"):
        write_image(target, np.zeros((H, W), np.float32))
    assert target.read_bytes() == b"old result"
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_write_removes_its_temp_file(tmp_path, monkeypatch, failure):
    target = tmp_path / "table.csv"
    target.write_text("old\n")

    def fail(fd):
        raise failure

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(BdnError if isinstance(failure, OSError) else KeyboardInterrupt) as excinfo:
        atomic_write_bytes(target, b"new\n" * 1000)
    if isinstance(failure, OSError):
        assert str(excinfo.value) == f"{target}: cannot write (No space left on device)"
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_atomic_write_text_and_permissions(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write_text(tmp_path / "new" / "notes.txt", "héllo\nwörld\n")
    assert path.read_bytes() == "héllo\nwörld\n".encode()
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file
    path.chmod(0o640)
    atomic_write_text(path, "again")
    assert path.read_text() == "again" and path.stat().st_mode & 0o777 == 0o640  # an existing file's mode stays
    assert sorted(p.name for p in path.parent.iterdir()) == ["notes.txt"]


# ------------------------------------------------------------------------------------------ inputs and pairs


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "shots"
    (root / "sub").mkdir(parents=True)
    for name in ("b.png", "a.JPG", "c.tif", "notes.txt", ".hidden.png", "sub/d.png"):
        (root / name).write_bytes(b"x")
    return root


def test_list_images_expands_folders_files_and_globs(folder):
    assert list_images([folder]) == ([folder / "a.JPG", folder / "b.png", folder / "c.tif"], [])
    assert list_images([folder / "notes.txt"]) == ([folder / "notes.txt"], [])  # kept; read_image will say
    assert list_images([f"{folder}/**/*.png"]) == ([folder / "b.png", folder / "sub" / "d.png"], [])
    assert list_images([str(folder / "*.txt")]) == ([], [f"{folder}/*.txt: no images match"])


def test_list_images_keeps_order_without_duplicates(folder):
    inputs = [folder / "c.tif", folder, str(folder / "c.tif"), f"{folder}/./b.png"]
    assert list_images(inputs) == ([folder / "c.tif", folder / "a.JPG", folder / "b.png"], [])


def test_list_images_names_inputs_that_match_nothing(tmp_path, folder):
    (tmp_path / "empty").mkdir()
    inputs = ["nope/*.png", str(tmp_path / "missing.png"), tmp_path / "empty", folder / "b.png"]
    assert list_images(inputs) == (
        [folder / "b.png"],
        [
            "nope/*.png: no images match",
            f"{tmp_path}/missing.png: no such file or folder",
            f"{tmp_path}/empty: no images in this folder",
        ],
    )


def test_check_same_size():
    with pytest.raises(BdnError, match=r"^a.png and b.png differ in size: 512x512 vs 480x512$"):
        check_same_size(np.zeros((512, 512)), np.zeros((512, 480, 3)), "a.png", "b.png")
    check_same_size(np.zeros((8, 9)), np.zeros((8, 9, 3)), "a.png", "b.png")  # size, not channels


def test_image_info_is_a_plain_record():
    alpha = np.zeros((2, 2), np.uint8)
    info = ImageInfo(dtype="uint8", mode="RGBA", alpha=alpha, format="PNG", path="x.png")
    assert info == ImageInfo(dtype="uint8", mode="RGBA", alpha=None, format="PNG", path="x.png")
    assert hash(info) == hash(ImageInfo("uint8", "RGBA", None, "PNG", "x.png"))
    assert "alpha" not in repr(info)
