"""The web page's logic without a browser: upload checks and decoding, results in the input's bit depth, methods,
zoom, DIP in a thread with progress and cancel, and the `bdn app` command line."""

import io

import cv2
import numpy as np
import pytest
from bdn.app import logic
from PIL import Image
from skimage import data

from bdn.errors import BdnError


def encoded(pixels: np.ndarray, suffix: str) -> bytes:
    """File bytes through OpenCV, which keeps 16-bit samples (pixels in RGB or grey)."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(suffix, pixels)
    assert ok
    return buffer.tobytes()


def png_bytes(pixels: np.ndarray) -> bytes:
    return encoded(pixels, ".png")


def tiff_bytes(pixels: np.ndarray) -> bytes:
    return encoded(pixels, ".tif")


def decoded_pixels(payload: bytes) -> np.ndarray:
    """What a file's bytes hold, samples as stored (RGB order for colour)."""
    pixels = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB) if pixels.ndim == 3 else pixels


COLOUR8 = data.astronaut()[100:164, 120:200]  # 80x64
GREY16 = data.camera()[200:248, 180:236].astype(np.uint16) * 257 + 3  # 56x48, odd low bits prove 16 bits


@pytest.mark.parametrize(
    ("encode", "pixels", "depth", "fmt"),
    [
        (png_bytes, COLOUR8, 8, "PNG"),
        (png_bytes, GREY16, 16, "PNG"),
        (tiff_bytes, COLOUR8, 8, "TIFF"),
        (tiff_bytes, GREY16, 16, "TIFF"),
    ],
)
def test_decode_upload_reads_8_and_16_bit_png_and_tiff(encode, pixels, depth, fmt):
    loaded = logic.decode_upload(encode(pixels), "photo.x")
    assert loaded.image.dtype == np.float32
    assert loaded.image.shape == pixels.shape
    assert logic.bit_depth(loaded.info) == depth
    assert loaded.info.format == fmt
    np.testing.assert_allclose(loaded.image, pixels / np.iinfo(pixels.dtype).max, atol=1e-6)
    kind = "grey" if pixels.ndim == 2 else "colour"
    assert loaded.size_text == f"{pixels.shape[1]}x{pixels.shape[0]} {kind}, {depth}-bit {fmt}"


def test_decode_upload_reads_jpeg():
    buffer = io.BytesIO()
    Image.fromarray(COLOUR8).save(buffer, format="JPEG", quality=95)
    loaded = logic.decode_upload(buffer.getvalue(), "photo.jpg")
    assert loaded.image.shape == COLOUR8.shape
    assert (loaded.info.format, loaded.info.dtype) == ("JPEG", "uint8")


def test_bad_uploads_get_one_line_naming_the_upload():
    good = png_bytes(COLOUR8)
    cases = {
        b"this is a text file, renamed\n": "notes.png: not an image file",
        good[: len(good) // 2]: "cut.png: truncated or corrupt image file",
        b"": "empty.png: empty file (0 bytes)",
    }
    names = iter(["notes.png", "cut.png", "empty.png"])
    for payload, expected in cases.items():
        with pytest.raises(BdnError) as caught:
            logic.decode_upload(payload, next(names))
        message = str(caught.value)
        assert message.startswith(expected), message
        assert "\n" not in message
        assert "/tmp" not in message and "upload" not in message  # the temporary file stays out of sight


def test_too_large_uploads_are_refused_by_bytes_and_by_pixels():
    payload = png_bytes(COLOUR8)
    with pytest.raises(BdnError, match=r"^big\.png: file too large \(.* MB; the limit is .* MB\)$"):
        logic.decode_upload(payload, "big.png", max_bytes=len(payload) - 1)
    with pytest.raises(BdnError) as caught:
        logic.decode_upload(payload, "wide.png", max_pixels=80 * 64 - 1)
    message = str(caught.value)
    assert message.startswith("wide.png: too many pixels: 80x64 = 5,120, over the limit of 5,119")
    assert "BDN_MAX_PIXELS" not in message  # a command-line hint means nothing in the page


def test_other_formats_are_refused_after_decoding():
    buffer = io.BytesIO()
    Image.fromarray(COLOUR8).save(buffer, format="BMP")
    with pytest.raises(BdnError, match=r"^pic\.png: a BMP image; the page takes PNG, JPEG or TIFF$"):
        logic.decode_upload(buffer.getvalue(), "pic.png")


def test_display_names_are_text_only_and_markdown_is_escaped():
    assert logic.display_name("../../etc/passwd") == "passwd"
    assert logic.display_name("C:\\Users\\me\\ph*to?.png") == "ph_to_.png"
    assert logic.display_name("..") == "upload"
    assert logic.display_name(None) == "upload"
    assert logic.download_name("my photo.tiff", "nlm", "PNG") == "my photo_nlm.png"
    assert logic.download_name("x.png", "bm3d", "TIFF") == "x_bm3d.tif"
    assert logic.escape_markdown("a_b *c* [d](e)") == r"a\_b \*c\* \[d\]\(e\)"


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
@pytest.mark.parametrize("pixels", [COLOUR8, GREY16], ids=["colour8", "grey16"])
def test_download_keeps_the_inputs_bit_depth_and_mode(pixels, fmt):
    loaded = logic.decode_upload(png_bytes(pixels), "in.png")
    payload = logic.encode_download(loaded.image, loaded.info, fmt)
    back = decoded_pixels(payload)
    assert back.dtype == pixels.dtype
    assert back.shape == pixels.shape
    np.testing.assert_array_equal(back, pixels)  # float round trip is exact at either depth
    assert Image.open(io.BytesIO(payload)).format == fmt


def test_download_of_a_16_bit_result_is_16_bit():
    loaded = logic.decode_upload(tiff_bytes(GREY16), "in.tif")
    result = logic.run_method(loaded.image, "median")
    back = decoded_pixels(logic.encode_download(result, loaded.info, "PNG"))
    assert back.dtype == np.uint16 and back.shape == GREY16.shape
    assert np.any(back % 257 != 0)  # real 16-bit values, not 8-bit ones scaled up


def test_run_nlm_on_a_small_noisy_image_improves_it():
    clean = data.camera()[::8, ::8].astype(np.float32) / 255  # 64x64
    noisy = logic.add_synthetic_noise(clean, 25, seed=0)
    assert noisy.min() >= 0 and noisy.max() <= 1
    result = logic.run_method(noisy, "nlm")
    assert result.shape == clean.shape and result.dtype == np.float32
    assert logic.scores(clean, result)[0] > logic.scores(clean, noisy)[0] + 2


def test_method_choices_list_every_method_classical_first_dip_last():
    from bdn.methods import METHODS

    choices = logic.method_choices()
    assert sorted(c.name for c in choices) == sorted(METHODS)
    assert choices[0].family == "classical" and choices[-1].family == "dip"
    assert {"nlm", "median", "bm3d"} <= {c.name for c in choices}
    with pytest.raises(BdnError, match="DipRun"):
        logic.run_method(np.zeros((16, 16), np.float32), "dip")


def test_reference_must_match_in_size_and_mode():
    noisy = logic.decode_upload(png_bytes(COLOUR8), "noisy.png")
    same = logic.decode_upload(png_bytes(COLOUR8), "clean.png")
    np.testing.assert_array_equal(logic.check_reference(noisy, same), same.image)
    small = logic.decode_upload(png_bytes(COLOUR8[:32]), "small.png")
    with pytest.raises(BdnError, match=r"^noisy\.png and small\.png differ in size: 80x64 vs 80x32$"):
        logic.check_reference(noisy, small)
    grey = logic.decode_upload(png_bytes(COLOUR8[..., 0]), "grey.png")
    with pytest.raises(BdnError, match="grey.png is a grey image but noisy.png is colour"):
        logic.check_reference(noisy, grey)


def test_samples_load_as_8_bit_images():
    for label in logic.SAMPLES:
        loaded = logic.load_sample(label)
        assert loaded.image.dtype == np.float32 and loaded.image.min() >= 0 and loaded.image.max() <= 1
        assert logic.bit_depth(loaded.info) == 8
        assert loaded.info.mode == ("L" if loaded.image.ndim == 2 else "RGB")


def test_zoom_is_a_nearest_neighbour_enlargement_kept_inside_the_image():
    image = np.arange(100, dtype=np.float32).reshape(10, 10) / 100
    crop = logic.zoom(image, 2, 3, 4, factor=4)
    assert crop.shape == (16, 16)
    np.testing.assert_array_equal(crop[::4, ::4], image[2:6, 3:7])
    np.testing.assert_array_equal(crop[:4, :4], image[2, 3])
    np.testing.assert_array_equal(logic.zoom(image, 9, 9, 4, factor=1), image[6:, 6:])  # moved back inside


def test_for_display_is_uint8_and_scaled_down():
    small = logic.for_display(np.full((20, 30), 0.5, np.float32))
    assert small.dtype == np.uint8 and small.shape == (20, 30) and small[0, 0] == 128
    big = logic.for_display(np.zeros((300, 600, 3), np.float32), side=100)
    assert big.shape == (50, 100, 3)


def test_dip_run_reports_progress_and_keeps_the_judges_choice(torch_one_thread):
    clean = data.camera()[::16, ::16].astype(np.float32) / 255  # 32x32
    noisy = logic.add_synthetic_noise(clean, 25, seed=0)
    run = logic.DipRun(noisy, 6, clean=clean, sigma=25, device="cpu", every=2).start()
    assert run.wait(timeout=120)
    progress = run.progress()
    assert progress.error is None and progress.done and not progress.cancelled
    assert progress.iteration == 6 and progress.fraction == 1.0
    assert [i for i, _ in progress.curve] == [1, 2, 4, 6]
    assert [i for i, _ in progress.psnr] == [1, 2, 4, 6]
    assert all(value > 0 for _, value in progress.curve)
    assert progress.threshold == pytest.approx(25.0)
    assert progress.judge == "noise" and progress.chosen_iteration == 6
    assert progress.result.shape == noisy.shape and progress.result.dtype == np.float32


def test_dip_run_cancels_and_keeps_the_output_so_far(torch_one_thread):
    noisy = logic.add_synthetic_noise(np.full((32, 32), 0.5, np.float32), 25, seed=1)
    run = logic.DipRun(noisy, 100_000, sigma=1.0, device="cpu")
    run.cancel()  # before the first iteration: the fit stops after it
    run.start()
    assert run.wait(timeout=120)
    progress = run.progress()
    assert progress.cancelled and progress.error is None
    assert progress.iteration == 1 and progress.result.shape == noisy.shape
    assert progress.psnr == []  # no reference, no PSNR


def test_dip_run_budget_left_out_follows_the_image_size_as_bdn_denoise_does():
    assert logic.DipRun(np.zeros((32, 32), np.float32), None).progress().total == 3000
    assert logic.DipRun(np.zeros((512, 512, 3), np.float32), None).progress().total == 6000
    assert logic.DipRun(np.zeros((512, 512), np.float32), 77).progress().total == 77


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the noise estimate of a flat image warns, then fails
def test_dip_run_errors_become_one_line():
    run = logic.DipRun(np.zeros((32, 32), np.float32), 5, device="cpu").start()  # no noise to estimate
    assert run.wait(timeout=120)
    progress = run.progress()
    assert progress.done and progress.result is None
    assert progress.error.startswith("judge noise:") and "\n" not in progress.error


def test_bdn_app_starts_streamlit_on_localhost(monkeypatch, capsys):
    import sys

    from bdn import cli
    from bdn.cli import app

    calls = []
    monkeypatch.setattr(app, "serve", lambda command: calls.append(command) or 0)
    assert cli.main(["app", "--port", "8765"]) == 0
    command = calls[0]
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4].endswith("app/bdn_app.py")
    options = dict(zip(command[5::2], command[6::2], strict=True))
    assert options["--server.address"] == "127.0.0.1"
    assert options["--server.port"] == "8765"
    assert options["--server.headless"] == "true"
    assert options["--server.maxUploadSize"] == str(logic.MAX_UPLOAD_MB)
    assert "http://127.0.0.1:8765" in capsys.readouterr().out
    assert cli.main(["app", "--host", "0.0.0.0"]) == 0
    assert calls[1][calls[1].index("--server.address") + 1] == "0.0.0.0"
    assert cli.main(["app", "--port", "0"]) == 1
    assert "--port must be between 1 and 65535" in capsys.readouterr().err


def test_dip_run_refuses_an_image_over_the_servers_memory_limit(monkeypatch):
    monkeypatch.setenv("BDN_APP_DIP_MEMORY_GB", "0.2")
    noisy = logic.add_synthetic_noise(np.full((1024, 1536, 3), 0.5, np.float32), 25, seed=1)
    run = logic.DipRun(noisy, 5, sigma=25, device="cpu").start()
    assert run.wait(timeout=120)
    progress = run.progress()
    assert progress.result is None and progress.iteration == 0  # refused before the first iteration
    assert progress.error.startswith("DIP on this 1536x1024 image needs about ")
    assert "over this server's limit of 0.2 GB (BDN_APP_DIP_MEMORY_GB)" in progress.error
