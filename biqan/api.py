"""BIQAN's public scoring API: a no-reference quality score for any image, and for every snapshot of a DIP run.

    import biqan
    biqan.score(image)                     # one float in [1, 10]; higher: the network judges it cleaner
    scorer = biqan.Scorer()                # load the network once for many images
    scorer(image_a), scorer(image_b)
    biqan.score_run("runs/cc")             # a table: every snapshot's score beside its PSNR

The score is the mean of BIQAN's predicted 10-bin distribution over quality levels 1..10 (`biqan.model`): its
training labels map a DIP iterate's PSNR against the clean image linearly onto mean scores 2.5 (8 dB) .. 7.5 (45 dB)
(biqan/labels.py), so a higher score means the network predicts a higher PSNR. It is a ranking signal within one
image's iterates more than an absolute measure across images: compare scores of versions of the same picture. How
well it ranks is measured by the rank correlation (Spearman) between score and PSNR over the iterates of CC and
PolyU's held-out split (README, "The quality network").

Any size: the image is scored at its own resolution (protocol "native") as the mean distribution over a grid of
`crop` x `crop` crops that covers it (`tiles="auto"`: ceil(longest side / crop) crops a side, 3 x 3 for 512 pixels
and crop 224; one crop, the whole image, for an image no larger than the crop).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bdn.errors import BdnError

__all__ = ["Scorer", "score", "score_run"]


def _tiles_for(height: int, width: int, crop: int, tiles: int | str) -> int:
    """The grid side: `tiles` as given, or ("auto") enough crops of `crop` pixels to cover the longer side."""
    if tiles == "auto":
        return max(1, math.ceil(max(height, width) / crop))
    if isinstance(tiles, bool) or not isinstance(tiles, (int, np.integer)) or tiles < 1:
        raise BdnError(f"tiles must be 'auto' or a whole number >= 1, got {tiles!r}")
    return int(tiles)


class Scorer:
    """BIQAN loaded once, scoring images: `Scorer()(image) -> float` (see the module docstring).

    Parameters
    ----------
    model : str, pathlib.Path or None
        A BIQAN checkpoint (`bdn train-biqan`'s best.safetensors); None: the one that ships with bdn.
    tiles : int or "auto"
        Crops a side of the grid each image is scored on ("auto": enough to cover it).
    device : str or torch.device
        Where the network runs ("cpu", "cuda", "auto").

    Examples
    --------
    >>> import biqan
    >>> from skimage import data
    >>> scorer = biqan.Scorer()
    >>> clean = data.astronaut()[:64, :64] / 255.0
    >>> value = scorer(clean)
    >>> 1.0 <= value <= 10.0
    True
    """

    def __init__(self, model: str | Path | None = None, *, tiles: int | str = "auto", device: str = "cpu") -> None:
        from bdn.devices import pick_device
        from biqan.model import load_biqan, shipped_biqan

        self.path = Path(model) if model is not None else shipped_biqan()
        self.model, metadata = load_biqan(self.path)
        self.protocol = str(metadata.get("protocol", "native"))
        self.crop = int(metadata.get("crop", 224))
        _tiles_for(1, 1, self.crop, tiles)  # a bad value fails here, not at the first image
        self.tiles = tiles
        self.device = pick_device(device, what="device")
        self.model.to(self.device).eval()

    def distribution(self, image: np.ndarray) -> np.ndarray:
        """The predicted distribution over quality levels 1..10 (float64, sums to 1)."""
        from bdn.metrics import to_float01
        from biqan.model import prepare_tiles
        from biqan.select import score_images

        pixels = to_float01(np.asarray(image))
        if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (1, 3)):
            raise BdnError(f"an image must be grey (H, W) or colour (H, W, 3), got shape {pixels.shape}")
        if not np.isfinite(pixels).all():
            raise BdnError("the image holds NaN or infinite values")
        tiles = _tiles_for(pixels.shape[0], pixels.shape[1], self.crop, self.tiles)

        def transform(x: np.ndarray) -> torch.Tensor:
            return prepare_tiles(x, self.protocol, self.crop, tiles)

        p = score_images(self.model, [pixels.astype(np.float32)], transform)[0]
        return p.detach().to("cpu", torch.float64).numpy()

    def __call__(self, image: np.ndarray) -> float:
        """The mean quality score in [1, 10] (higher: judged cleaner)."""
        p = self.distribution(image)
        return float(p @ np.arange(1, p.size + 1, dtype=np.float64))


def score(image: np.ndarray, *, model: str | Path | None = None, tiles: int | str = "auto") -> float:
    """BIQAN's no-reference quality score of one image.

    Loads the network at each call; for many images make one `Scorer` and call it.

    Parameters
    ----------
    image : numpy.ndarray
        A float image in [0, 1] (uint8 and uint16 are scaled), grey (H, W) or colour (H, W, 3), any size.
    model : str, pathlib.Path or None
        A BIQAN checkpoint; None: the one that ships with bdn.
    tiles : int or "auto"
        Crops a side of the grid the score averages over ("auto": enough to cover the image).

    Returns
    -------
    float
        The mean of the predicted distribution over quality levels 1..10: higher means the network predicts a
        higher PSNR against the (unknown) clean image.

    Raises
    ------
    BdnError
        For an image of another shape, NaN pixels, or a checkpoint that is not a BIQAN.

    Examples
    --------
    >>> import biqan
    >>> from skimage import data
    >>> value = biqan.score(data.astronaut()[:64, :64] / 255.0)
    >>> 1.0 <= value <= 10.0
    True
    """
    return Scorer(model, tiles=tiles)(image)


def score_run(
    folder: str | Path, *, model: str | Path | None = None, tiles: int | str = "auto", progress: bool = False
) -> pd.DataFrame:
    """BIQAN's score of every snapshot of a run folder (`bdn run`), beside the PSNR the run recorded.

    Parameters
    ----------
    folder : str or pathlib.Path
        A run folder (bdn/dip/runfolder.py); its finished images are read.
    model : str, pathlib.Path or None
        A BIQAN checkpoint; None: the one that ships with bdn.
    tiles : int or "auto"
        As in `score`.
    progress : bool
        Show a progress bar.

    Returns
    -------
    pandas.DataFrame
        One row per snapshot, sorted by image then iteration: image, iteration, path, score (mean, 1..10),
        score_std (the distribution's spread) and psnr (against the clean image; NaN where the run had none).

    Examples
    --------
    >>> import biqan
    >>> import numpy as np
    >>> from skimage import data
    >>> from bdn.dip import DipConfig
    >>> from bdn.dip.run import run_folder
    >>> from bdn.io import write_image
    >>> clean = data.astronaut()[:64, :64] / 255.0
    >>> noisy = np.clip(clean + np.random.default_rng(0).normal(0, 0.1, clean.shape), 0, 1)
    >>> _ = write_image("mean/a_mean.png", clean), write_image("real/a_real.png", noisy)
    >>> config = DipConfig(net_type="skip64", num_iter=4, save_iter=2)
    >>> _ = run_folder("real", "mean", "run", config, progress=False, echo=None, device="cpu")
    >>> table = biqan.score_run("run")
    >>> table[["image", "iteration"]].values.tolist()
    [['a', 2], ['a', 4]]
    >>> bool(table["score"].between(1, 10).all() and (table["psnr"] > 0).all())
    True
    """
    from bdn.dip.runfolder import read_run
    from bdn.io import read_image

    scorer = Scorer(model, tiles=tiles)
    iterates = read_run(folder, require_snapshots=True)
    rows = []
    from tqdm import tqdm

    for it in tqdm(iterates, desc="BIQAN scores", unit="snapshot", disable=not progress):
        p = scorer.distribution(read_image(it.path)[0])
        levels = np.arange(1, p.size + 1, dtype=np.float64)
        mean = float(p @ levels)
        spread = float(np.sqrt(max(float(p @ (levels - mean) ** 2), 0.0)))
        rows.append((it.image, it.iteration, it.path, mean, spread, math.nan if it.psnr is None else it.psnr))
    return pd.DataFrame(rows, columns=["image", "iteration", "path", "score", "score_std", "psnr"])
