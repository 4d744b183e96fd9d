"""Download the public datasets, every file checked against a shipped SHA-256 before it is put in place.

Manifests (`bdn/manifests/<SET>.txt`, `sha256  relative/path` lines, paths relative to the set's folder) hold
checksums only, no data; they were made from the SHA256SUMS of the reference copies:

    awk -v s=CC/ 'index($2, s) == 1 {print $1 "  " substr($2, length(s) + 1)}' SHA256SUMS | LC_ALL=C sort -k2

A file is fetched from `<base_url>/<upstream folder>/<relative path>`; `base_url` defaults to the GitHub raw
root of the set's source repository and may name a mirror or a local copy (`file://...`) laid out alike.
Nothing unverified ever lands under the data root: a file is written (atomically) only after its checksum
matches, so an interrupted or corrupted download leaves either the old state or a good file.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from bdn.data import data_root, dataset_info
from bdn.errors import BdnError

_ZOU = "https://raw.githubusercontent.com/ShaofengZou/A-CNN-Based-Blind-Denoising-Method/master"
_BIAS_FREE = "https://raw.githubusercontent.com/LabForComputationalVision/bias_free_denoising/master"
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Source:
    """Where a set comes from: a repository root and the set's folder inside it."""

    base_url: str
    folder: str
    licence: str


SOURCES: dict[str, Source] = {
    "CC": Source(_ZOU, "dataset/CC", "see ShaofengZou/A-CNN-Based-Blind-Denoising-Method; Nam et al. CVPR 2016"),
    "PolyU": Source(_ZOU, "dataset/PolyU", "see csjunxu/PolyU-Real-World-Noisy-Images-Dataset; Xu et al. 2018"),
    "Set12": Source(_BIAS_FREE, "data/Test/Set12", "LabForComputationalVision/bias_free_denoising (MIT)"),
    "BSD68": Source(_BIAS_FREE, "data/Test/Set68", "LabForComputationalVision/bias_free_denoising (MIT)"),
    "Train400": Source(_BIAS_FREE, "data/Train400", "LabForComputationalVision/bias_free_denoising (MIT)"),
}


def parse_manifest(text: str, label: str) -> list[tuple[str, str]]:
    """(sha256, relative path) entries of manifest text; BdnError naming `label` and a malformed line."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, relative = line.partition("  ")
        digest, relative = digest.strip().lower(), relative.strip()
        parts = PurePosixPath(relative).parts
        valid_digest = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        # A manifest names files inside the set's folder only: no absolute paths, no way out through "..".
        if not valid_digest or not parts or relative.startswith("/") or ".." in parts or "\\" in relative:
            raise BdnError(f"{label}:{number}: expected 'SHA256  relative/path', got {line.strip()!r}")
        entries.append((digest, relative))
    if not entries:
        raise BdnError(f"{label}: manifest lists no files")
    return entries


def read_manifest(manifest: str | Path) -> list[tuple[str, str]]:
    """Entries of a manifest file (see `parse_manifest`)."""
    path = Path(manifest)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BdnError(f"{path}: cannot read manifest ({error.strerror or error})") from None
    return parse_manifest(text, str(path))


def shipped_manifest(name: str) -> list[tuple[str, str]]:
    """Entries of the manifest bdn ships for a known set (package data, read through importlib.resources)."""
    info = dataset_info(name)
    resource = resources.files("bdn").joinpath("manifests", f"{info.name}.txt")
    if not resource.is_file():
        raise BdnError(f"{info.name}: no download manifest shipped with bdn")
    return parse_manifest(resource.read_text(encoding="utf-8"), f"bdn/manifests/{info.name}.txt")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str) -> bytes:
    """The bytes at `url` (https or file); any failure is one BdnError line naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        raise BdnError(f"{url}: download failed (HTTP {error.code} {error.reason})") from None
    except urllib.error.URLError as error:
        reason = getattr(error.reason, "strerror", None) or error.reason
        raise BdnError(f"{url}: download failed ({reason})") from None
    except (OSError, ValueError) as error:  # timeouts, resets, malformed URLs
        raise BdnError(f"{url}: download failed ({error})") from None


def download_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    base_url: str | None = None,
    manifest: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Fetch every file of a public set into `<root>/<name>/` and return that folder.

    Files already there with the right checksum are skipped, so a second run (or one after an interruption)
    only fetches what is missing or wrong. Each download is checked against the manifest's SHA-256 before it
    is written; on a mismatch nothing is written and BdnError says "<url>: checksum mismatch (expected ...,
    got ...)".
    `base_url` replaces the source repository root (e.g. `Path(mirror).as_uri()`); `manifest` replaces the
    shipped list of files and checksums.
    """
    from tqdm import tqdm

    from bdn.io import atomic_write_bytes

    info = dataset_info(name)
    source = SOURCES[info.name]
    entries = read_manifest(manifest) if manifest is not None else shipped_manifest(info.name)
    folder = Path(root if root is not None else data_root()).expanduser() / info.name
    base = (base_url if base_url is not None else source.base_url).rstrip("/")

    fetched = 0
    with tqdm(entries, desc=info.name, unit="file", disable=not progress) as bar:
        for expected, relative in bar:
            target = folder / relative
            if target.is_file() and file_sha256(target) == expected:
                continue  # already here and intact
            url = f"{base}/{source.folder}/{urllib.parse.quote(relative)}"
            data = _fetch(url)
            got = hashlib.sha256(data).hexdigest()
            if got != expected:
                raise BdnError(f"{url}: checksum mismatch (expected {expected}, got {got})")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data)
            except OSError as error:
                raise BdnError(f"{target}: cannot write ({error.strerror or error})") from None
            fetched += 1
            bar.set_postfix(fetched=fetched, refresh=False)
    return folder
