"""What the web page does, as plain functions: no Streamlit here, so all of it is tested without a browser.

The page (app/bdn_app.py) only lays out widgets and calls these. Rules they keep:
- Uploads are checked for size first, then decoded by bdn.io (type checked by decoding, never by the name, with a
  pixel limit read from the header before any pixel is decoded). Refusals are BdnError with one line that names the
  upload by a cleaned-up display name.
- Nothing a user sends becomes a filesystem path: bytes go to a file with a fixed name inside a fresh temporary
  folder, and the uploaded name is used only as text (messages, the suggested download name).
- Results go back in the input's bit depth (16-bit PNG/TIFF in, 16-bit out) and grey/colour mode, alpha untouched.
- DIP runs in a thread (`DipRun`) so that the page can show live progress, draw the judge's curve and cancel it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bdn.errors import BdnError
from bdn.io import ImageInfo, check_same_size, read_image, write_image

__all__ = [
    "DOWNLOAD_FORMATS",
    "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_MB",
    "MAX_PIXELS",
    "SAMPLES",
    "DipProgress",
    "DipRun",
    "Loaded",
    "MethodChoice",
    "add_synthetic_noise",
    "bit_depth",
    "check_reference",
    "decode_upload",
    "display_name",
    "download_name",
    "encode_download",
    "escape_markdown",
    "for_display",
    "load_sample",
    "method_choices",
    "run_method",
    "scores",
    "zoom",
]

log = logging.getLogger(__name__)

#: Largest upload accepted (the page's uploader is given the same limit, in MB).
MAX_UPLOAD_MB = 25
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 1024 * 1024
#: Largest image (width x height) the page takes: 16 MP keeps NLM on a laptop within a minute or so and a
#: compressed 25 MB file from unpacking into gigabytes (a decompression bomb is refused from its header).
MAX_PIXELS = 4096 * 4096
#: What the page accepts (what bdn.io reported after decoding, not what the name says).
UPLOAD_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "TIFF": "TIFF"}
UPLOAD_EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff")
DOWNLOAD_FORMATS = {"PNG": (".png", "image/png"), "TIFF": (".tif", "image/tiff")}
#: scikit-image's sample images the page offers (name -> skimage.data function name).
SAMPLES = {"astronaut (colour)": "astronaut", "cameraman (grey)": "camera", "coffee (colour)": "coffee"}

_DISPLAY_SIDE = 1024  # previews are scaled down to this longest side: the browser gets a small PNG
_UPLOAD_FILE = "upload"  # the only name an upload ever has on disk (inside a fresh temporary folder)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._() -]+")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:])")


@dataclass(frozen=True)
class Loaded:
    """An image ready for the page: float32 pixels in [0, 1], what is needed to write it back, a name to show."""

    image: np.ndarray = field(repr=False)
    info: ImageInfo
    name: str

    @property
    def size_text(self) -> str:
        height, width = self.image.shape[:2]
        kind = "grey" if self.image.ndim == 2 else "colour"
        return f"{width}x{height} {kind}, {bit_depth(self.info)}-bit {self.info.format}"


@dataclass(frozen=True)
class MethodChoice:
    name: str
    family: str  # classical | model | dip
    label: str


# ---------------------------------------- names and text


def display_name(name: str | None, default: str = "upload") -> str:
    """A file name fit to show in messages: the last path part, odd characters replaced, at most 80 characters.

    Only ever text: the page never opens, creates or joins a path with it.
    """
    base = re.split(r"[\\/]", name or "")[-1]
    cleaned = _SAFE_NAME.sub("_", base).strip(" .")[:80]
    return cleaned or default


def download_name(name: str, method: str, fmt: str) -> str:
    """'photo.png', 'nlm', 'TIFF' -> 'photo_nlm.tif' (a suggestion for the browser's save dialog)."""
    stem = display_name(name).rsplit(".", 1)[0] or "image"
    return f"{stem}_{display_name(method, 'denoised')}{DOWNLOAD_FORMATS[fmt][0]}"


def escape_markdown(text: str) -> str:
    """Backslash-escape Markdown's special characters, so that a message shows as the plain text it is."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def bit_depth(info: ImageInfo) -> int:
    return 16 if info.dtype == "uint16" else 8


# ---------------------------------------- inputs


def decode_upload(
    data: bytes, name: str | None, *, max_bytes: int = MAX_UPLOAD_BYTES, max_pixels: int = MAX_PIXELS
) -> Loaded:
    """Check and decode an uploaded PNG, JPEG or TIFF (8 or 16 bit); BdnError with one line on anything else.

    Checked in order: empty, too large (bytes), then bdn.io decodes it from a temporary file with a fixed name:
    not an image, truncated or corrupt, too many pixels (from the header, before decoding), sample types other
    than 8/16-bit integers; finally formats other than PNG, JPEG and TIFF.
    """
    shown = display_name(name)
    if not data:
        raise BdnError(f"{shown}: empty file (0 bytes)")
    if len(data) > max_bytes:
        raise BdnError(f"{shown}: file too large ({len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:g} MB)")
    with tempfile.TemporaryDirectory(prefix="bdn-app-") as folder:
        path = Path(folder) / _UPLOAD_FILE
        path.write_bytes(data)
        try:
            image, info = read_image(path, max_pixels=max_pixels)
        except BdnError as error:
            raise BdnError(_renamed(str(error), str(path), shown)) from None
    kind = UPLOAD_FORMATS.get(info.format)
    if kind is None:
        raise BdnError(f"{shown}: a {info.format} image; the page takes PNG, JPEG or TIFF")
    # The page shows and returns RGB; a palette image comes back as full colour, not re-quantised.
    info = dataclasses.replace(info, mode="RGB" if info.mode == "P" else info.mode, path="")
    return Loaded(image, info, shown)


def _renamed(message: str, temporary: str, shown: str) -> str:
    """bdn.io's message about the temporary file, told about the upload (and without the command-line hint)."""
    message = message.replace(temporary, shown)
    return message.replace("; set BDN_MAX_PIXELS to raise the limit", "")


def load_sample(label: str) -> Loaded:
    """One of SAMPLES as an 8-bit image (grey or RGB), named by its label."""
    from skimage import data

    if label not in SAMPLES:
        raise BdnError(f"unknown sample {label!r}; choose from {', '.join(SAMPLES)}")
    pixels = getattr(data, SAMPLES[label])()
    mode = "L" if pixels.ndim == 2 else "RGB"
    info = ImageInfo(dtype="uint8", mode=mode, format="PNG")
    return Loaded(pixels.astype(np.float32) / 255.0, info, f"{SAMPLES[label]}.png")


def add_synthetic_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise of `sigma` (0-255 units), clipped to [0, 1] as a saved photograph would be; seeded."""
    from bdn.noise import add_noise

    return add_noise(image, "gaussian", float(sigma), seed=seed, clip=True)


def check_reference(noisy: Loaded, reference: Loaded) -> np.ndarray:
    """The reference's pixels in the noisy image's mode (grey/colour); BdnError when the sizes differ."""
    check_same_size(noisy.image, reference.image, noisy.name, reference.name)
    clean = reference.image
    if noisy.image.ndim == 2 and clean.ndim == 3:
        raise BdnError(f"{reference.name} is a colour image but {noisy.name} is grey; upload a grey reference")
    if noisy.image.ndim == 3 and clean.ndim == 2:
        raise BdnError(f"{reference.name} is a grey image but {noisy.name} is colour; upload a colour reference")
    return clean


def scores(clean: np.ndarray, image: np.ndarray) -> tuple[float, float]:
    """(PSNR in dB, SSIM) of `image` against the clean reference, as everywhere in bdn."""
    from bdn.metrics import psnr_ssim

    return psnr_ssim(clean, image)


# ---------------------------------------- methods


def method_choices() -> list[MethodChoice]:
    """Every registered method: classical filters, shipped models (when their weights are installed), DIP last."""
    from bdn.methods import METHODS

    order = {"classical": 0, "model": 1, "dip": 2}
    choices = [
        MethodChoice(m.name, m.family, f"{m.name} ({m.family}): {m.summary}")
        for m in sorted(METHODS.values(), key=lambda m: order.get(m.family, 3))
    ]
    return choices


def run_method(image: np.ndarray, method: str, sigma: float | None = None) -> np.ndarray:
    """Denoise with a classical filter or a shipped model through bdn.denoise (DIP goes through DipRun)."""
    from bdn.methods import denoise, get_method

    if get_method(method).family == "dip":
        raise BdnError("dip runs through DipRun (live progress and cancel), not run_method")
    params = {} if sigma is None else {"sigma": float(sigma)}
    return denoise(image, method, **params)


# ---------------------------------------- outputs


def encode_download(image: np.ndarray, info: ImageInfo, fmt: str = "PNG") -> bytes:
    """The result as PNG or TIFF bytes in the input's bit depth and mode (alpha put back where it fits)."""
    if fmt not in DOWNLOAD_FORMATS:
        raise BdnError(f"download format {fmt!r}: choose from {', '.join(DOWNLOAD_FORMATS)}")
    suffix = DOWNLOAD_FORMATS[fmt][0]
    with tempfile.TemporaryDirectory(prefix="bdn-app-") as folder:
        path = write_image(Path(folder) / f"result{suffix}", image, info)
        return path.read_bytes()


def for_display(image: np.ndarray, side: int = _DISPLAY_SIDE) -> np.ndarray:
    """uint8 pixels for the browser, scaled down (area average) to at most `side` pixels on the longer side."""
    import cv2

    pixels = np.clip(image, 0.0, 1.0)
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return np.rint(pixels * 255).astype(np.uint8)


def zoom(image: np.ndarray, top: int, left: int, size: int, factor: int = 4) -> np.ndarray:
    """The `size` x `size` region at (top, left), kept inside the image, enlarged `factor` times (nearest)."""
    height, width = image.shape[:2]
    size = max(1, min(size, height, width))
    top = int(np.clip(top, 0, height - size))
    left = int(np.clip(left, 0, width - size))
    crop = image[top : top + size, left : left + size]
    return np.repeat(np.repeat(crop, factor, axis=0), factor, axis=1)


# ---------------------------------------- DIP with progress and cancel


@dataclass(frozen=True)
class DipProgress:
    """A consistent copy of where a DIP run stands, for the page to draw."""

    iteration: int
    total: int
    curve: list[tuple[int, float]]  # (iteration, residual std of the EMA output vs the noisy image, 0-255 units)
    psnr: list[tuple[int, float]]  # (iteration, PSNR vs the clean reference): only with a reference
    threshold: float | None  # the noise rule stops when the residual reaches this (0-255 units)
    done: bool
    cancelled: bool
    error: str | None
    result: np.ndarray | None = field(repr=False)
    chosen_iteration: int | None
    judge: str | None

    @property
    def fraction(self) -> float:
        return min(1.0, self.iteration / self.total) if self.total else 0.0


def app_dip_limit_bytes() -> int:
    """What one DIP fit may take on this server: BDN_APP_DIP_MEMORY_GB, else 4 GB or 70 % of the memory available
    now, whichever is less (one visitor's 3000x2000 upload once took the server past 9 GB in a minute)."""
    import os

    from bdn.dip.memory import memory_budget_bytes

    if os.environ.get("BDN_APP_DIP_MEMORY_GB", "").strip():
        try:
            return memory_budget_bytes(float(os.environ["BDN_APP_DIP_MEMORY_GB"]))
        except ValueError:
            raise BdnError("BDN_APP_DIP_MEMORY_GB: expected a number of gigabytes") from None
    return min(4 * 2**30, memory_budget_bytes(None))


def check_dip_memory(job, shape: tuple[int, ...]) -> None:
    """One line, before any fitting, when DIP on this image would need more memory than the server allows."""
    from bdn.dip.memory import job_bytes

    need, limit = job_bytes(job), app_dip_limit_bytes()
    if need > limit:
        height, width = shape[:2]
        raise BdnError(
            f"DIP on this {width}x{height} image needs about {need / 2**30:.1f} GB, over this server's limit of "
            f"{limit / 2**30:.1f} GB (BDN_APP_DIP_MEMORY_GB): crop or shrink it, or use `bdn denoise --method dip`, "
            "which fits large images in tiles"
        )


class DipRun:
    """One DIP fit in a background thread: live progress, the judge's curve, cancel, the judge's chosen iterate.

    The fit is bdn.dip.denoise's (the same padding, net, judge and defaults as `bdn denoise --method dip`), driven
    through fit_dip's `on_iteration`, which records the curve at the first iteration and every `every` (default:
    about 200 points in all) and returns True (stop) once `cancel()` was called. A cancelled run keeps the judge's
    choice so far (its EMA output at the newest iteration until the rule fires). Errors end up in
    `progress().error` as one line, never as an exception.
    """

    def __init__(
        self,
        image: np.ndarray,
        iterations: int | None,
        *,
        clean: np.ndarray | None = None,
        sigma: float | None = None,
        seed: int = 0,
        device: str = "auto",
        every: int | None = None,
    ) -> None:
        self._image = image
        self._clean = clean
        if iterations is None:  # bdn's default for this size, as `bdn denoise --method dip` fits it
            from bdn.dip.denoise import default_iterations

            iterations = default_iterations(*image.shape[:2])
        self._iterations = int(iterations)
        self._sigma = sigma
        self._seed = seed
        self._device = device
        # About 200 points a curve, and the first iteration, so that a slow fit draws a line early.
        self._every = max(1, self._iterations // 200) if every is None else max(1, int(every))
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._iteration = 0
        self._curve: list[tuple[int, float]] = []
        self._psnr: list[tuple[int, float]] = []
        self._threshold: float | None = None
        self._error: str | None = None
        self._result: np.ndarray | None = None
        self._chosen: int | None = None
        self._judge: str | None = None
        self._thread = threading.Thread(target=self._run, name="bdn-app-dip", daemon=True)

    def start(self) -> DipRun:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True if it has."""
        return self._finished.wait(timeout)

    def progress(self) -> DipProgress:
        with self._lock:
            return DipProgress(
                iteration=self._iteration,
                total=self._iterations,
                curve=list(self._curve),
                psnr=list(self._psnr),
                threshold=self._threshold,
                done=self._finished.is_set(),
                cancelled=self._cancel.is_set(),
                error=self._error,
                result=self._result,
                chosen_iteration=self._chosen,
                judge=self._judge,
            )

    def _run(self) -> None:
        try:
            self._fit()
        except BdnError as error:
            self._fail(str(error))
        except Exception as error:  # a bug, not bad input: the page gets one line, the server log the traceback
            log.exception("DIP run failed")
            self._fail(f"DIP failed: {type(error).__name__}: {error}")
        finally:
            self._finished.set()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error = message

    def _fit(self) -> None:
        from bdn.dip.denoise import prepare
        from bdn.dip.fit import fit_dip
        from bdn.dip.judges import NoiseJudge

        job = prepare(self._image, sigma=self._sigma, iterations=self._iterations, seed=self._seed)
        check_dip_memory(job, self._image.shape)
        judge = job.judge
        with self._lock:
            self._judge = None if judge is None else judge.name
            # The noise rule's threshold, drawn beside its residual (the other judges have none).
            self._threshold = float(judge.factor * judge.sigma) if isinstance(judge, NoiseJudge) else None

        def on_iteration(iteration: int, frame) -> bool:
            point = None
            if iteration % self._every == 0 or iteration in (1, self._iterations):
                point = self._point(iteration, judge, job, frame)
            with self._lock:
                self._iteration = iteration
                if point is not None:
                    residual, value = point
                    if residual is not None:
                        self._curve.append((iteration, residual))
                    if value is not None:
                        self._psnr.append((iteration, value))
            return self._cancel.is_set()

        result = fit_dip(
            job.padded,
            None,
            job.config,
            device=self._device,
            init_state=job.init_state,
            judge=judge,
            on_iteration=on_iteration,
            progress=False,
            label="DIP (app)",
        )
        chosen = result.judge_image if result.judge_image is not None else result.ema
        with self._lock:
            self._iteration = result.iterations
            self._result = job.crop(chosen)
            self._chosen = result.judge_iteration if result.judge_iteration is not None else result.iterations

    def _point(self, iteration: int, judge, job, frame) -> tuple[float | None, float | None]:
        """The judge's figure (residual std, 0-255) and, with a reference, the PSNR of the cropped EMA output."""
        from bdn.dip.judges import NoiseJudge

        residual = None
        residuals = judge.residuals if isinstance(judge, NoiseJudge) else None
        if residuals:
            last_iteration, variance = residuals[-1]
            if last_iteration == iteration and math.isfinite(variance):
                residual = math.sqrt(max(variance, 0.0)) * 255.0
        value = None
        if self._clean is not None:
            from bdn.metrics import psnr

            value = psnr(self._clean, job.crop(frame.ema()))
        return residual, value
