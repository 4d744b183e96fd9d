"""bdn.download: checksummed downloads, served from local folders through file:// URLs."""

import hashlib
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bdn import download
from bdn.download import SOURCES, download_dataset, file_sha256, read_manifest, shipped_manifest
from bdn.errors import BdnError

SET12_FOLDER = "data/Test/Set12"  # where Set12 lives in its upstream repository


def make_upstream(tmp_path: Path, rng, count: int = 3) -> tuple[Path, Path]:
    """A fake Set12 upstream (a few generated PNGs laid out like the real repository) and its manifest."""
    upstream = tmp_path / "upstream"
    folder = upstream / SET12_FOLDER
    folder.mkdir(parents=True)
    lines = []
    for k in range(1, count + 1):
        path = folder / f"{k:02d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(path)
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}")
    manifest = tmp_path / "Set12.txt"
    manifest.write_text("\n".join(lines) + "\n")
    return upstream, manifest


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.fixture
def counted_fetches(monkeypatch):
    """Count the URLs download actually fetches."""
    urls = []
    real_fetch = download._fetch

    def fetch(url):
        urls.append(url)
        return real_fetch(url)

    monkeypatch.setattr(download, "_fetch", fetch)
    return urls


def test_download_and_skip(tmp_path, rng, counted_fetches):
    upstream, manifest = make_upstream(tmp_path, rng)
    root = tmp_path / "root"
    folder = download_dataset("Set12", root, base_url=upstream.as_uri(), manifest=manifest, progress=False)
    assert folder == root / "Set12"
    assert all_files(root) == ["Set12/01.png", "Set12/02.png", "Set12/03.png"]
    for name in ["01.png", "02.png", "03.png"]:
        assert (folder / name).read_bytes() == (upstream / SET12_FOLDER / name).read_bytes()
    assert counted_fetches == [f"{upstream.as_uri()}/{SET12_FOLDER}/{k:02d}.png" for k in (1, 2, 3)]

    # A second run fetches nothing and leaves the files alone.
    mtimes = [p.stat().st_mtime_ns for p in sorted(folder.iterdir())]
    download_dataset("Set12", root, base_url=upstream.as_uri() + "/", manifest=manifest, progress=False)
    assert len(counted_fetches) == 3
    assert [p.stat().st_mtime_ns for p in sorted(folder.iterdir())] == mtimes

    # A damaged local file is fetched again; the others are still skipped.
    (folder / "02.png").write_bytes(b"damaged")
    download_dataset("Set12", root, base_url=upstream.as_uri(), manifest=manifest, progress=True)
    assert len(counted_fetches) == 4 and counted_fetches[-1].endswith("/02.png")
    assert (folder / "02.png").read_bytes() == (upstream / SET12_FOLDER / "02.png").read_bytes()


def test_data_root_is_the_default(tmp_path, rng, monkeypatch):
    upstream, manifest = make_upstream(tmp_path, rng, count=1)
    monkeypatch.setenv("BDN_DATA", str(tmp_path / "env_root"))
    folder = download_dataset("set12", base_url=upstream.as_uri(), manifest=manifest, progress=False)
    assert folder == tmp_path / "env_root" / "Set12" and (folder / "01.png").is_file()


def test_checksum_mismatch_writes_nothing(tmp_path, rng):
    upstream, manifest = make_upstream(tmp_path, rng, count=2)
    (upstream / SET12_FOLDER / "01.png").write_bytes(b"tampered")
    root = tmp_path / "root"
    expected = manifest.read_text().split()[0]
    got = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(BdnError, match=rf"01\.png: checksum mismatch \(expected {expected}, got {got}\)$"):
        download_dataset("Set12", root, base_url=upstream.as_uri(), manifest=manifest, progress=False)
    assert not root.exists() or all_files(root) == []  # neither the file nor a temporary file


def test_checksum_mismatch_keeps_the_good_files_before_it(tmp_path, rng):
    upstream, manifest = make_upstream(tmp_path, rng, count=3)
    (upstream / SET12_FOLDER / "03.png").write_bytes(b"tampered")
    root = tmp_path / "root"
    with pytest.raises(BdnError, match="03.png: checksum mismatch"):
        download_dataset("Set12", root, base_url=upstream.as_uri(), manifest=manifest, progress=False)
    assert all_files(root) == ["Set12/01.png", "Set12/02.png"]


def test_missing_upstream_file(tmp_path, rng):
    upstream, manifest = make_upstream(tmp_path, rng, count=2)
    (upstream / SET12_FOLDER / "02.png").unlink()
    root = tmp_path / "root"
    with pytest.raises(BdnError, match=r"02\.png: download failed \(") as caught:
        download_dataset("Set12", root, base_url=upstream.as_uri(), manifest=manifest, progress=False)
    assert "\n" not in str(caught.value)
    assert all_files(root) == ["Set12/01.png"]


def test_network_errors_are_one_line(tmp_path, rng, monkeypatch):
    _, manifest = make_upstream(tmp_path, rng, count=1)

    def refuse(url, timeout):
        raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)

    monkeypatch.setattr(download.urllib.request, "urlopen", refuse)
    with pytest.raises(
        BdnError,
        match=r"https://example\.org/data/Test/Set12/01\.png: download failed \(HTTP 404 Not Found\)",
    ):
        download_dataset("Set12", tmp_path / "root", base_url="https://example.org", manifest=manifest, progress=False)

    def time_out(url, timeout):
        raise TimeoutError("timed out")

    monkeypatch.setattr(download.urllib.request, "urlopen", time_out)
    with pytest.raises(BdnError, match=r"01\.png: download failed \(timed out\)"):
        download_dataset("Set12", tmp_path / "root", manifest=manifest, progress=False)


def test_bad_manifests(tmp_path):
    bad = tmp_path / "bad.txt"
    for line in ["nothex  01.png", f"{'0' * 64}  ../escape.png", f"{'0' * 64}  /abs.png", f"{'0' * 64}"]:
        bad.write_text(f"# comment\n{line}\n")
        with pytest.raises(BdnError, match=r"bad\.txt:2: expected 'SHA256  relative/path'"):
            read_manifest(bad)
    bad.write_text("\n# nothing\n")
    with pytest.raises(BdnError, match="lists no files"):
        read_manifest(bad)
    with pytest.raises(BdnError, match="cannot read manifest"):
        read_manifest(tmp_path / "absent.txt")
    with pytest.raises(BdnError, match="unknown dataset 'Kodak'"):
        download_dataset("Kodak", tmp_path, progress=False)


def test_shipped_manifests_cover_every_set():
    counts = {name: len(shipped_manifest(name)) for name in SOURCES}
    assert counts == {"CC": 30, "PolyU": 200, "Set12": 12, "BSD68": 68, "Train400": 400}
    cc = dict((path, digest) for digest, path in shipped_manifest("CC"))
    assert "real/5dmark3_iso3200_1_real.png" in cc and "mean/5dmark3_iso3200_1_mean.png" in cc
    assert SOURCES["BSD68"].folder == "data/Test/Set68"  # upstream calls it Set68


@pytest.mark.data
def test_real_cc_download_from_local_copy(tmp_path, dataset_dir):
    """The shipped CC checksums match the real files, downloaded through the upstream layout."""
    upstream = tmp_path / "upstream"
    (upstream / "dataset").mkdir(parents=True)
    (upstream / "dataset" / "CC").symlink_to(dataset_dir("CC"), target_is_directory=True)
    folder = download_dataset("CC", tmp_path / "root", base_url=upstream.as_uri(), progress=False)
    assert len(list((folder / "real").iterdir())) == 15 and len(list((folder / "mean").iterdir())) == 15
    name = "real/d800_iso6400_3_real.png"
    assert (folder / name).read_bytes() == (dataset_dir("CC") / name).read_bytes()


@pytest.mark.data
@pytest.mark.parametrize("name", ["PolyU", "Set12", "BSD68", "Train400"])
def test_shipped_checksums_match_local_copies(dataset_dir, name):
    folder = dataset_dir(name)
    entries = shipped_manifest(name)
    wrong = [path for digest, path in entries if file_sha256(folder / path) != digest]
    assert wrong == []
    assert len(entries) == sum(1 for p in folder.rglob("*") if p.is_file())
