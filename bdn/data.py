"""Datasets: where they live, noisy/clean pairs, synthetic noise for clean-only sets, patches, PolyU split.

bdn finds the public sets under one data root (`data_root()`): each set is a folder named as in `DATASETS`.
Real-noise sets (CC, PolyU) hold `real/<id>_real.<ext>` noisy and `mean/<id>_mean.<ext>` clean images; the
clean-only sets (Set12, BSD68, Train400) get their noise from `synthesize`, seeded per image so that results
do not depend on the order images are visited in.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bdn.errors import BdnError
from bdn.names import CLEAN_SUFFIX, NOISY_SUFFIX, polyu_group, strip_suffix

DATA_ENV = "BDN_DATA"
POLYU_SPLITS = ("train", "heldout")
_SHOW = 5  # how many offending file names an error message lists


@dataclass(frozen=True)
class DatasetInfo:
    """A known dataset: its folder name under the data root, and how its files are laid out."""

    name: str
    kind: str  # "pairs" (real noise, noisy + clean), "clean" (noise is synthesised) or "bundled" (clean, installed)
    grey: bool
    description: str
    noisy_dir: str | None = None  # sub-folders for "pairs" sets
    clean_dir: str | None = None

    @property
    def paired(self) -> bool:
        """True for real-noise sets of noisy/clean pairs."""
        return self.kind == "pairs"


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("CC", "pairs", False, "15 real-noise crops 512x512 (Nam et al. 2016)", "real", "mean"),
        DatasetInfo("PolyU", "pairs", False, "100 real-noise crops 512x512 (Xu et al. 2018)", "real", "mean"),
        DatasetInfo("Set12", "clean", True, "12 grey test images, 256x256 and 512x512"),
        DatasetInfo("BSD68", "clean", True, "68 grey test images, 481x321 (Berkeley test split)"),
        DatasetInfo("Train400", "clean", True, "400 grey 180x180 training images (DnCNN)"),
        DatasetInfo("Photos", "bundled", False, "4 colour photographs installed with scikit-image (synthetic noise)"),
    )
}
# The colour photographs of the "Photos" set (scikit-image's data, so every install has them): the colour test set
# for synthetic noise. No shipped model trains on them (bdn's colour models train on PolyU-train).
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


@dataclass(frozen=True)
class Pair:
    """One noisy image and its clean partner (None where the set has none)."""

    name: str
    noisy: Path
    clean: Path | None


# --- where the data lives ---------------------------------------------------------------------------------


def data_root() -> Path:
    """The folder holding the datasets: $BDN_DATA, else the checkout's `datasets/`, else `./datasets`.

    Read at call time (no caching) so tests and long-lived processes see a changed environment.
    """
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    project = Path(__file__).resolve().parent.parent
    if (project / "pyproject.toml").is_file():  # running from a source checkout
        return project / "datasets"
    return Path.cwd() / "datasets"


def dataset_info(name: str) -> DatasetInfo:
    """The `DATASETS` entry for `name` (case-insensitive); BdnError listing the known sets otherwise."""
    for key, info in DATASETS.items():
        if key.lower() == str(name).lower():
            return info
    raise BdnError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def skimage_colour_images(names: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """(name, float32 RGB image in [0, 1]) of scikit-image's data images of these names (grey ones left out)."""
    import skimage.data

    images = [(name, getattr(skimage.data, name)()) for name in names]
    return [(name, (image[..., :3] / 255.0).astype(np.float32)) for name, image in images if image.ndim == 3]


def bundled_images(name: str) -> list[tuple[str, np.ndarray]]:
    """(name, float32 image in [0, 1]) of a set installed with bdn's dependencies ("Photos")."""
    if dataset_info(name).name != "Photos":
        raise BdnError(f"dataset {name} is not installed with bdn: use dataset_path() and clean_images()")
    return skimage_colour_images(PHOTOS)


def dataset_path(name: str, root: str | Path | None = None) -> Path:
    """The folder of dataset `name` under `root` (default `data_root()`); it must exist and not be empty."""
    info = dataset_info(name)
    folder = Path(root if root is not None else data_root()).expanduser() / info.name
    if not folder.is_dir() or not any(folder.iterdir()):
        state = "is empty" if folder.is_dir() else "not found"
        raise BdnError(
            f"dataset {info.name} {state} at {folder}: run `bdn download {info.name}` "
            f"or set {DATA_ENV} to the folder that holds {info.name}"
        )
    return folder


def dataset_pairs(name: str, root: str | Path | None = None) -> list[Pair]:
    """The noisy/clean pairs of a real-noise set (CC, PolyU), sorted by name."""
    info = dataset_info(name)
    if not info.paired:
        raise BdnError(f"dataset {info.name} holds clean images only: use clean_images() and synthesize()")
    folder = dataset_path(info.name, root)
    return find_pairs(folder / info.noisy_dir, folder / info.clean_dir)


def polyu_pairs(split: str, root: str | Path | None = None) -> list[Pair]:
    """The PolyU pairs on one side ('train' or 'heldout') of the committed split."""
    wanted = set(polyu_ids(split))
    pairs = [pair for pair in dataset_pairs("PolyU", root) if pair.name in wanted]
    missing = sorted(wanted - {pair.name for pair in pairs})
    if missing:
        raise BdnError(f"PolyU: {len(missing)} images of the {split} split are missing ({_names(missing)})")
    return pairs


# --- finding and loading images ---------------------------------------------------------------------------


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOW])
    return shown + (f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else "")


def _image_files(folder: str | Path) -> list[Path]:
    """Image files directly inside `folder` (no recursion, hidden files ignored), sorted by name."""
    from bdn.io import IMAGE_EXTENSIONS

    folder = Path(folder)
    if not folder.is_dir():
        raise BdnError(f"{folder}: not a folder")
    extensions = {ext.lower() for ext in IMAGE_EXTENSIONS}
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in extensions
    )
    if not files:
        raise BdnError(f"{folder}: no images found (looked for {', '.join(sorted(extensions))})")
    return files


def _by_key(files: Iterable[Path], suffix: str) -> dict[str, Path]:
    """Map image id -> file, the id being the stem without `suffix`; two files with one id is an error."""
    keyed: dict[str, Path] = {}
    for path in files:
        key = strip_suffix(path.stem, suffix)
        if key in keyed:
            raise BdnError(f"{path}: same image name {key!r} as {keyed[key].name}; keep only one of them")
        keyed[key] = path
    return keyed


def find_pairs(noisy_dir: str | Path, clean_dir: str | Path | None = None) -> list[Pair]:
    """Match noisy images with clean ones by name, sorted by name.

    `<id>_real.<ext>` pairs with `<id>_mean.<ext>` (CC/PolyU style; extensions may differ), otherwise equal
    stems pair up. The two folders may be one and the same, holding both kinds. Any image without a partner
    is an error (silently dropping images would skew every mean reported over a set). Without `clean_dir`,
    every image is a noisy one with no clean partner; its name drops a trailing `_real` all the same, so an
    image keeps one name whether or not its clean partner is given.
    """
    noisy_files = _image_files(noisy_dir)
    if clean_dir is None:
        noisy = _by_key(noisy_files, NOISY_SUFFIX)
        return [Pair(name, noisy[name], None) for name in sorted(noisy)]

    if Path(clean_dir).resolve() == Path(noisy_dir).resolve():
        # Both kinds in one folder: the suffixes alone tell them apart.
        clean_files = [path for path in noisy_files if path.stem.endswith(CLEAN_SUFFIX)]
        others = [path.name for path in noisy_files if not path.stem.endswith((NOISY_SUFFIX, CLEAN_SUFFIX))]
        noisy_files = [path for path in noisy_files if path.stem.endswith(NOISY_SUFFIX)]
        if others or not noisy_files or not clean_files:
            found = f" ({len(others)} neither: {_names(others)})" if others else ""
            raise BdnError(
                f"{noisy_dir}: one folder for noisy and clean needs only *{NOISY_SUFFIX}.* and "
                f"*{CLEAN_SUFFIX}.* images{found}"
            )
    else:
        clean_files = _image_files(clean_dir)
    noisy = _by_key(noisy_files, NOISY_SUFFIX)
    clean = _by_key(clean_files, CLEAN_SUFFIX)

    lonely_noisy = sorted(noisy[key].name for key in noisy.keys() - clean.keys())
    lonely_clean = sorted(clean[key].name for key in clean.keys() - noisy.keys())
    problems = []
    if lonely_noisy:
        problems.append(f"{len(lonely_noisy)} noisy without a clean partner in {clean_dir} ({_names(lonely_noisy)})")
    if lonely_clean:
        problems.append(f"{len(lonely_clean)} clean without a noisy partner in {noisy_dir} ({_names(lonely_clean)})")
    if problems:
        raise BdnError(f"{noisy_dir}: unmatched images: " + "; ".join(problems))
    return [Pair(name, noisy[name], clean[name]) for name in sorted(noisy)]


def _describe(image: np.ndarray) -> str:
    height, width = image.shape[:2]
    return f"{width}x{height} " + ("grey" if image.ndim == 2 else f"{image.shape[2]}-channel")


def load_pair(pair: Pair) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a pair as float32 images in [0, 1]; BdnError when the two differ in size or channels."""
    from bdn.io import read_image

    noisy, _ = read_image(pair.noisy)
    if pair.clean is None:
        return noisy, None
    clean, _ = read_image(pair.clean)
    if noisy.shape != clean.shape:
        raise BdnError(
            f"{pair.noisy}: size {_describe(noisy)} does not match its clean partner {pair.clean} ({_describe(clean)})"
        )
    return noisy, clean


def clean_images(folder: str | Path) -> list[Path]:
    """The image files of a clean-only set (Set12, BSD68, Train400, or any folder), sorted by name."""
    return _image_files(folder)


# --- synthetic noise --------------------------------------------------------------------------------------


def image_seed(name: str, seed: int) -> int:
    """A seed for one image: stable across runs, platforms and iteration order, different for each name.

    crc32 of the name (Python's own hash() is salted per process) and the run seed are mixed through
    numpy's SeedSequence, so nearby seeds or similar names still give unrelated noise.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise BdnError(f"seed must be a non-negative integer, got {seed!r}")
    name_hash = zlib.crc32(name.encode("utf-8"))
    return int(np.random.SeedSequence([int(seed), name_hash]).generate_state(1, dtype=np.uint64)[0])


def synthesize(
    clean: np.ndarray, model: str, strength: float, seed: int | None, *, name: str, clip: bool = False
) -> np.ndarray:
    """Noisy version of a clean image, reproducible per (image name, seed); `seed=None` draws fresh noise.

    Not clipped by default, as the synthetic-noise benchmarks quote it (DnCNN, BM3D tables).
    """
    from bdn.noise import add_noise

    return add_noise(clean, model, strength, seed=None if seed is None else image_seed(name, seed), clip=clip)


def load_synthetic(
    path: str | Path, model: str, strength: float, seed: int | None, *, clip: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a clean image and return (noisy, clean), the noise seeded by the file's stem."""
    from bdn.io import read_image

    path = Path(path)
    clean, _ = read_image(path)
    return synthesize(clean, model, strength, seed, name=path.stem, clip=clip), clean


# --- cropping and patches ---------------------------------------------------------------------------------


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window (the whole side where the image is smaller), as a view."""
    height, width = image.shape[:2]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    return image[top : top + size, left : left + size]


def crop_to_multiple(image: np.ndarray, multiple: int = 32) -> np.ndarray:
    """Crop so height and width are multiples of `multiple` (DIP's encoder-decoder halves the size 5 times).

    Like the seed, the crop keeps the top-left corner and drops the last rows and columns (not a centre
    crop), so pixel (0, 0) stays pixel (0, 0). Returns a view, not a copy.
    """
    if multiple < 1:
        raise BdnError(f"multiple must be at least 1, got {multiple}")
    height, width = image.shape[:2]
    if height < multiple or width < multiple:
        raise BdnError(f"image of {width}x{height} is smaller than the crop multiple {multiple}")
    return image[: height - height % multiple, : width - width % multiple]


def _sample_positions(
    shapes: Sequence[tuple[int, ...]], patch_size: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image index, top, left) of `count` patches, uniform over every valid position of every image."""
    if patch_size < 1 or count < 0:
        raise BdnError(f"patch_size must be >= 1 and count >= 0, got {patch_size} and {count}")
    if not shapes:
        raise BdnError("no images to cut patches from")
    rows = np.array([max(shape[0] - patch_size + 1, 0) for shape in shapes], dtype=np.int64)
    cols = np.array([max(shape[1] - patch_size + 1, 0) for shape in shapes], dtype=np.int64)
    positions = rows * cols  # weighting images by their positions makes every patch equally likely
    if positions.sum() == 0:
        raise BdnError(f"every image is smaller than the patch size {patch_size}")
    index = rng.choice(len(shapes), size=count, p=positions / positions.sum())
    top = rng.integers(0, rows[index]) if count else np.zeros(0, dtype=np.int64)
    left = rng.integers(0, cols[index]) if count else np.zeros(0, dtype=np.int64)
    return index, top, left


def _check_images(images: Sequence[np.ndarray]) -> None:
    for image in images:
        if image.ndim not in (2, 3):
            raise BdnError(f"patches need 2-D grey or 3-D colour images, got shape {image.shape}")
    if len({image.shape[2:] for image in images}) > 1:
        raise BdnError("patches need images that are all grey or all with the same number of channels")


def _cut(images: Sequence[np.ndarray], index, top, left, patch_size: int) -> np.ndarray:
    first = images[0]
    out = np.empty((len(index), patch_size, patch_size, *first.shape[2:]), dtype=np.float32)
    for k, (i, y, x) in enumerate(zip(index, top, left, strict=True)):
        out[k] = images[i][y : y + patch_size, x : x + patch_size]
    return out


def random_patches(images: Sequence[np.ndarray], patch_size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random square patches, shape (count, p, p) grey or (count, p, p, C), float32.

    Each patch position (over all images) is equally likely; images smaller than the patch are never used.
    """
    images = list(images)
    _check_images(images)
    index, top, left = _sample_positions([image.shape for image in images], patch_size, count, rng)
    return _cut(images, index, top, left, patch_size)


def random_patch_pairs(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], patch_size: int, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Like `random_patches` over (noisy, clean) pairs: two arrays whose patches come from the same places."""
    pairs = list(pairs)
    for k, (noisy, clean) in enumerate(pairs):
        if noisy.shape != clean.shape:
            raise BdnError(f"pair {k}: noisy shape {noisy.shape} does not match clean shape {clean.shape}")
    noisy_images = [noisy for noisy, _ in pairs]
    clean_images_ = [clean for _, clean in pairs]
    _check_images(noisy_images)
    index, top, left = _sample_positions([image.shape for image in noisy_images], patch_size, count, rng)
    return _cut(noisy_images, index, top, left, patch_size), _cut(clean_images_, index, top, left, patch_size)


# --- PolyU: groups and the committed split ----------------------------------------------------------------


SPLIT_SALT = "bdn-polyu-split-v1"


def make_polyu_split(ids: Iterable[str], heldout: int = 30) -> dict[str, str]:
    """The rule behind `splits/polyu_split.csv`: id -> 'train' | 'heldout', by scene.

    A group is a scene name (case-insensitive) over all cameras, so a held-out scene was never seen by any
    camera in training. Groups are visited in the order of sha256(SPLIT_SALT + ':' + scene) (fixed, not
    hand-picked); a group goes to the held-out side when it still fits in `heldout` crops and every camera
    keeps at least one crop on the training side.
    """
    ids = sorted(set(ids))
    camera_of = {image_id: polyu_group(image_id)[0] for image_id in ids}
    groups: dict[str, list[str]] = defaultdict(list)
    for image_id in ids:
        groups[polyu_group(image_id)[1].lower()].append(image_id)
    order = sorted(groups, key=lambda scene: hashlib.sha256(f"{SPLIT_SALT}:{scene}".encode()).hexdigest())
    cameras = set(camera_of.values())
    held: set[str] = set()
    for scene in order:
        candidate = held | set(groups[scene])
        if len(candidate) > heldout:
            continue
        if {camera_of[i] for i in ids if i not in candidate} == cameras:
            held = candidate
    return {image_id: "heldout" if image_id in held else "train" for image_id in ids}


def scene_group(name: str) -> str:
    """What a validation split holds out whole: a PolyU crop's 'camera/scene' (crops of one shot are
    near-duplicates, so one on each side would flatter validation), any other image's own name."""
    try:
        return "/".join(polyu_group(name))
    except BdnError:
        return name


def split_by_scene(names: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The names held out for validation: a seeded `fraction` of the scene groups (`scene_group`), at least one
    and never all, each group whole. The same names, fraction and seed always give the same split.

    BdnError when the names make fewer than 2 groups.
    """
    names = list(names)
    groups = sorted({scene_group(name) for name in names})
    if len(groups) < 2:
        raise BdnError(
            f"{len(groups)} source image(s) (a PolyU scene counts once); at least 2 are needed (whole images are "
            "held out for validation)"
        )
    count = min(len(groups) - 1, max(1, round(fraction * len(groups))))
    held = {groups[k] for k in np.random.default_rng(seed).permutation(len(groups))[:count]}
    return {name for name in names if scene_group(name) in held}


def write_polyu_split(ids: Iterable[str], path: str | Path) -> None:
    """Write the split CSV (id,camera,scene,split) that `make_polyu_split` gives for `ids`."""
    split = make_polyu_split(ids)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "camera", "scene", "split"])
    for image_id, side in split.items():
        writer.writerow([image_id, *polyu_group(image_id), side])
    from bdn.io import atomic_write_text

    atomic_write_text(path, buffer.getvalue())


def _split_text(name: str | Path | None) -> tuple[str, str]:
    """(label for messages, CSV text) of a split: a file path, or a file shipped in bdn/splits."""
    if name is not None and Path(name).is_file():
        return str(name), Path(name).read_text(encoding="utf-8")
    file = str(name or "polyu_split")
    file = file if file.endswith(".csv") else file + ".csv"
    resource = resources.files("bdn").joinpath("splits", file)
    if "/" in file or "\\" in file or not resource.is_file():
        raise BdnError(f"{name}: split file not found (neither a path nor a file shipped in bdn/splits)")
    return f"bdn/splits/{file}", resource.read_text(encoding="utf-8")


def polyu_split(name: str | Path | None = None) -> dict[str, str]:
    """id -> 'train' | 'heldout' from the committed split (or another split file in bdn/splits, or a path).

    DIP defaults, judge parameters and model selection are tuned on the 'train' side only; the 'heldout' side
    and CC are for reporting.
    """
    source, text = _split_text(name)
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"id", "split"} <= set(rows[0]):
        raise BdnError(f"{source}: a split file needs a header with id and split columns")
    split = {}
    for row in rows:
        if row["split"] not in POLYU_SPLITS:
            raise BdnError(f"{source}: {row['id']}: split must be one of {', '.join(POLYU_SPLITS)}")
        split[row["id"]] = row["split"]
    return split


def polyu_ids(split: str, name: str | Path | None = None) -> list[str]:
    """The sorted PolyU ids on one side of the split: 'train' or 'heldout'."""
    if split not in POLYU_SPLITS:
        raise BdnError(f"unknown PolyU split {split!r} (known: {', '.join(POLYU_SPLITS)})")
    return sorted(image_id for image_id, side in polyu_split(name).items() if side == split)
