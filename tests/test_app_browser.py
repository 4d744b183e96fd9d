"""The web page in a real browser: `bdn app` serves it, headless Chromium (Debian's package, driven by Playwright)
uploads images, denoises, downloads, cancels a DIP fit and is shown clear messages for bad uploads.

Needs /usr/bin/chromium (apt-get install chromium; .ci/run installs it) and the playwright Python package (no
browser download: Playwright drives the system's Chromium). Without them the tests skip locally and fail under
CI=true. BDN_APP_SCREENSHOT=path.png saves a screenshot of the page with a result (for the README).
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180  # seconds for the server to answer (the machine may be loaded)
STEP = 120_000  # milliseconds for any one thing to appear in the page

pytestmark = pytest.mark.browser


def _missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (required under CI=true)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install playwright)")
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        _missing(f"{CHROMIUM} not found (apt-get install chromium)")
    if shutil.which("streamlit") is None and not _importable("streamlit"):
        _missing("streamlit is not installed (pip install streamlit)")
    return sync_playwright


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(playwright_api, tmp_path_factory):
    """`bdn app` on a free port, in its own process group so that it and Streamlit are both stopped after."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("app") / "server.log"
    # One torch thread for the DIP test: on cores shared with other jobs, two threads made each DIP iteration ten
    # times slower here (5 s against 0.5 s at 96x96).
    env = {"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bdn.cli", "app", "--port", str(port)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"bdn app exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as answer:
                    if answer.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"bdn app did not answer within {START_TIMEOUT} s:\n{log_path.read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)
        print(log_path.read_text())  # shown by pytest when a test failed


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (bdn app and its Streamlit child), SIGKILL if it lingers."""
    if process.poll() is None:
        with _suppress_lookup():
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with _suppress_lookup():
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
    # bdn app's own process may be gone while Streamlit (same group) is still shutting down
    with _suppress_lookup():
        os.killpg(process.pid, signal.SIGKILL)


def _suppress_lookup():
    from contextlib import suppress

    return suppress(ProcessLookupError, PermissionError)


@pytest.fixture(scope="module")
def browser(playwright_api):
    with playwright_api() as api:
        chromium = api.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(STEP)
    page.goto(server, timeout=STEP)
    page.get_by_test_id("stFileUploader").first.wait_for()
    yield page
    context.close()


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), pixels)
    return path


@pytest.fixture
def images(tmp_path):
    """A 16-bit grey noisy PNG (72x96), its clean reference, and a smaller one that does not match."""
    clean = data.camera()[150:222, 200:296].astype(np.uint16) * 257
    noise = np.random.default_rng(0).normal(0, 20 * 257, clean.shape)
    noisy = np.clip(clean + noise, 0, 65535).astype(np.uint16)
    return {
        "noisy": _write_png(tmp_path / "noisy16.png", noisy),
        "clean": _write_png(tmp_path / "clean16.png", clean),
        "small": _write_png(tmp_path / "small.png", data.camera()[:40, :40]),
    }


def _upload(page, label: str, path: Path) -> None:
    uploader = page.get_by_test_id("stFileUploader").filter(has_text=label)
    uploader.locator("input[type=file]").set_input_files(str(path))


def _choose_method(page, name: str) -> None:
    page.get_by_test_id("stSelectbox").filter(has_text="Method").click()
    page.get_by_role("option", name=re.compile(rf"^{re.escape(name)} \(")).click()


def _error_text(page) -> str:
    alerts = page.get_by_test_id("stAlertContentError")
    alerts.first.wait_for()
    return " | ".join(alerts.all_inner_texts())


def _download(page, tmp_path: Path, name: str) -> Path:
    with page.expect_download() as download:
        page.get_by_test_id("stDownloadButton").locator("button").click()
    target = tmp_path / name
    download.value.save_as(target)
    return target


def test_upload_denoise_compare_and_download_in_the_inputs_bit_depth(page, images, tmp_path):
    _upload(page, "Noisy image", images["noisy"])
    page.get_by_text("96x72 grey, 16-bit PNG").wait_for()
    _upload(page, "Clean reference", images["clean"])
    page.get_by_text(re.compile(r"Noisy · PSNR \d+\.\d\d dB, SSIM")).wait_for()
    _choose_method(page, "median")
    page.get_by_role("button", name="Denoise", exact=True).click()
    page.get_by_text(re.compile(r"^denoised: median \(")).wait_for()
    figures = page.get_by_text(re.compile(r"Denoised · PSNR \d+\.\d\d dB, SSIM")).inner_text()
    noisy_figures = page.get_by_text(re.compile(r"Noisy · PSNR")).inner_text()
    assert _psnr(figures) > _psnr(noisy_figures)  # the median filter helps on Gaussian noise
    assert page.get_by_test_id("stImage").count() == 4  # noisy, denoised, and their zoomed regions
    page.get_by_text("denoised, 64x64 at 4x").wait_for()
    assert "Traceback" not in page.content()

    saved = _download(page, tmp_path, "result.png")
    assert page.get_by_test_id("stDownloadButton").inner_text().strip() == "Download the result (PNG, 16-bit)"
    result = cv2.imread(str(saved), cv2.IMREAD_UNCHANGED)
    assert result is not None and result.dtype == np.uint16 and result.shape == (72, 96)
    assert np.any(result % 257 != 0)  # 16-bit values, not 8-bit ones scaled up

    screenshot = os.environ.get("BDN_APP_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot)

    from bdn.app.logic import method_choices

    models = [choice.name for choice in method_choices() if choice.family == "model"]
    if models:  # a shipped model, when one is installed, runs the same way
        _choose_method(page, models[0])
        page.get_by_role("button", name="Denoise", exact=True).click()
        page.get_by_text(re.compile(rf"^denoised: {re.escape(models[0])} \(")).wait_for()
        result = cv2.imread(str(_download(page, tmp_path, "model.png")), cv2.IMREAD_UNCHANGED)
        assert result.dtype == np.uint16 and result.shape == (72, 96)


def _psnr(text: str) -> float:
    return float(re.search(r"PSNR (\d+\.\d+) dB", text).group(1))


def test_bad_uploads_get_a_clear_message_not_a_traceback(page, images, tmp_path):
    fake = tmp_path / "notes.png"
    fake.write_text("a text file with a .png name\n")
    _upload(page, "Noisy image", fake)
    assert "notes.png: not an image file" in _error_text(page)
    assert "Traceback" not in page.content()

    _upload(page, "Noisy image", images["noisy"])
    page.get_by_text("96x72 grey, 16-bit PNG").wait_for()
    _upload(page, "Clean reference", images["small"])
    assert "noisy16.png and small.png differ in size: 96x72 vs 40x40" in _error_text(page)


def test_dip_shows_live_progress_and_can_be_cancelled(page, images):
    _upload(page, "Noisy image", images["noisy"])
    page.get_by_text("96x72 grey, 16-bit PNG").wait_for()
    _choose_method(page, "dip")
    # A noise level of 1 (the slider's least) keeps the judge from stopping the fit before Cancel does.
    page.get_by_text("I know the noise level").click()
    page.get_by_test_id("stSlider").filter(has_text="Noise level σ given").get_by_role("slider").press("Home")
    page.get_by_role("button", name="Denoise", exact=True).click()
    page.get_by_text(re.compile(r"DIP: iteration [1-9]\d* of 3000")).wait_for()
    page.get_by_role("button", name="Cancel DIP").click()
    note = page.get_by_text(re.compile(r"^DIP cancelled after \d+ iterations")).inner_text()
    done = int(re.search(r"after (\d+) iterations", note).group(1))
    assert 1 <= done < 3000
    page.get_by_text(re.compile(r"^denoised: dip \(")).wait_for()
    assert "Traceback" not in page.content()
