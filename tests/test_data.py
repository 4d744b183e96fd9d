"""bdn.data: data root, pairs, synthetic noise, crops, patches and the PolyU split."""

from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bdn import data
from bdn.data import (
    Pair,
    clean_images,
    crop_to_multiple,
    data_root,
    dataset_path,
    find_pairs,
    image_seed,
    load_pair,
    make_polyu_split,
    polyu_group,
    polyu_ids,
    polyu_split,
    random_patch_pairs,
    random_patches,
    synthesize,
)
from bdn.errors import BdnError


def save(path: Path, size=(8, 6), value: int = 0, mode: str = "RGB") -> Path:
    """Write a small flat PNG (size = width, height) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value,) * 3).save(path)
    return path


# --- data root and dataset folders ------------------------------------------------------------------------


def test_data_root_follows_env_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("BDN_DATA", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("BDN_DATA")
    # From this source checkout the default is the project's datasets/ folder.
    assert data_root() == Path(data.__file__).resolve().parent.parent / "datasets"
    monkeypatch.setenv("BDN_DATA", "")
    assert data_root().name == "datasets"


def test_dataset_path(monkeypatch, tmp_path):
    monkeypatch.setenv("BDN_DATA", str(tmp_path))
    with pytest.raises(BdnError, match=r"unknown dataset 'Kodak'.*CC, PolyU, Set12, BSD68, Train400"):
        dataset_path("Kodak")
    with pytest.raises(BdnError, match=r"dataset CC not found at .*CC: run `bdn download CC` or set BDN_DATA"):
        dataset_path("CC")
    (tmp_path / "CC").mkdir()
    with pytest.raises(BdnError, match="is empty"):
        dataset_path("CC")
    save(tmp_path / "CC" / "real" / "a_real.png")
    assert dataset_path("cc") == tmp_path / "CC"  # names are case-insensitive
    assert dataset_path("CC", root=tmp_path) == tmp_path / "CC"
    assert data.DATASETS["CC"].paired and not data.DATASETS["Set12"].paired


# --- pairs ------------------------------------------------------------------------------------------------


def test_find_pairs_cc_style(tmp_path):
    for name in ["b", "a", "c"]:
        save(tmp_path / "real" / f"{name}_real.png")
        save(tmp_path / "mean" / f"{name}_mean.png")
    (tmp_path / "real" / "notes.txt").write_text("not an image")
    pairs = find_pairs(tmp_path / "real", tmp_path / "mean")
    assert [p.name for p in pairs] == ["a", "b", "c"]
    assert pairs[0] == Pair("a", tmp_path / "real" / "a_real.png", tmp_path / "mean" / "a_mean.png")


def test_find_pairs_same_stem_and_one_folder(tmp_path):
    for name in ["x1", "x2"]:
        save(tmp_path / "noisy" / f"{name}.png")
        save(tmp_path / "clean" / f"{name}.jpg")  # extensions may differ
    pairs = find_pairs(tmp_path / "noisy", tmp_path / "clean")
    assert [(p.name, p.noisy.name, p.clean.name) for p in pairs] == [
        ("x1", "x1.png", "x1.jpg"),
        ("x2", "x2.png", "x2.jpg"),
    ]
    both = tmp_path / "both"
    save(both / "k_real.png")
    save(both / "k_mean.png")
    assert find_pairs(both, both) == [Pair("k", both / "k_real.png", both / "k_mean.png")]
    save(both / "stray.png")
    with pytest.raises(BdnError, match=r"needs only \*_real\.\* and \*_mean\.\* images \(1 neither: stray.png\)"):
        find_pairs(both, both)


def test_find_pairs_without_clean(tmp_path):
    save(tmp_path / "p_real.png")
    save(tmp_path / "q.png")
    pairs = find_pairs(tmp_path)
    assert [(p.name, p.clean) for p in pairs] == [("p", None), ("q", None)]


def test_find_pairs_unmatched_is_an_error(tmp_path):
    for name in ["a", "b", "c"]:
        save(tmp_path / "real" / f"{name}_real.png")
    save(tmp_path / "mean" / "a_mean.png")
    save(tmp_path / "mean" / "z_mean.png")
    with pytest.raises(
        BdnError,
        match=r"2 noisy without a clean partner .*\(b_real.png, c_real.png\); 1 clean"
        r" without a noisy partner .*\(z_mean.png\)",
    ):
        find_pairs(tmp_path / "real", tmp_path / "mean")


def test_find_pairs_lists_only_the_first_few(tmp_path):
    for k in range(8):
        save(tmp_path / "real" / f"{k}_real.png")
    save(tmp_path / "mean" / "0_mean.png")
    with pytest.raises(
        BdnError,
        match=r"7 noisy .*\(1_real.png, 2_real.png, 3_real.png, 4_real.png, 5_real.png, "
        r"\.\.\. \(2 more\)\)",
    ):
        find_pairs(tmp_path / "real", tmp_path / "mean")


def test_find_pairs_empty_missing_and_duplicate(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(BdnError, match=r"empty: no images found"):
        find_pairs(tmp_path / "empty")
    with pytest.raises(BdnError, match=r"nowhere: not a folder"):
        find_pairs(tmp_path / "nowhere")
    save(tmp_path / "dup" / "a.png")
    save(tmp_path / "dup" / "a.jpg")
    with pytest.raises(BdnError, match=r"same image name 'a'"):
        find_pairs(tmp_path / "dup")


def test_load_pair(tmp_path):
    pair = Pair("a", save(tmp_path / "a_real.png", value=255), save(tmp_path / "a_mean.png", value=0))
    noisy, clean = load_pair(pair)
    assert noisy.shape == clean.shape == (6, 8, 3) and noisy.dtype == clean.dtype == np.float32
    assert noisy.max() == 1.0 and clean.max() == 0.0
    alone, none = load_pair(Pair("a", pair.noisy, None))
    assert none is None and alone.shape == (6, 8, 3)


def test_load_pair_size_mismatch(tmp_path):
    pair = Pair("a", save(tmp_path / "a_real.png", size=(8, 6)), save(tmp_path / "a_mean.png", size=(8, 7)))
    with pytest.raises(BdnError, match=r"a_real.png: size 8x6 3-channel does not match .*a_mean.png \(8x7 3-channel\)"):
        load_pair(pair)
    grey = Pair("g", pair.noisy, save(tmp_path / "g_mean.png", size=(8, 6), mode="L"))
    with pytest.raises(BdnError, match=r"8x6 3-channel does not match .*\(8x6 grey\)"):
        load_pair(grey)


def test_clean_images(tmp_path):
    for name in ["02.png", "01.png", ".hidden.png"]:
        save(tmp_path / name, mode="L")
    assert [p.name for p in clean_images(tmp_path)] == ["01.png", "02.png"]


# --- synthetic noise --------------------------------------------------------------------------------------


def test_image_seed_stable_and_distinct():
    assert image_seed("test001", 0) == image_seed("test001", 0)
    seeds = {image_seed(name, seed) for name in ["01", "02", "test001"] for seed in [0, 1, 2]}
    assert len(seeds) == 9
    with pytest.raises(BdnError, match="non-negative"):
        image_seed("a", -1)


def test_synthesize_reproducible_per_image():
    clean = np.full((32, 32), 0.5, dtype=np.float32)
    a = synthesize(clean, "gaussian", 25, seed=0, name="01")
    assert a.dtype == np.float32 and a.shape == clean.shape
    np.testing.assert_array_equal(a, synthesize(clean, "gaussian", 25, seed=0, name="01"))
    assert np.abs(a - synthesize(clean, "gaussian", 25, seed=0, name="02")).mean() > 0.05
    assert np.abs(a - synthesize(clean, "gaussian", 25, seed=1, name="01")).mean() > 0.05
    assert abs(float((a - clean).std()) - 25 / 255) < 0.01
    fresh = [synthesize(clean, "gaussian", 25, seed=None, name="01") for _ in range(2)]
    assert not np.array_equal(*fresh)
    # Not clipped by default (benchmark convention); clip=True keeps [0, 1].
    dark = np.zeros((32, 32), dtype=np.float32)
    assert synthesize(dark, "gaussian", 25, seed=0, name="d").min() < 0
    assert synthesize(dark, "gaussian", 25, seed=0, name="d", clip=True).min() == 0


# --- cropping and patches ---------------------------------------------------------------------------------


def test_crop_to_multiple_keeps_top_left():
    image = np.arange(70 * 100 * 3, dtype=np.float32).reshape(70, 100, 3)
    cropped = crop_to_multiple(image)
    assert cropped.shape == (64, 96, 3)
    np.testing.assert_array_equal(cropped, image[:64, :96])
    assert crop_to_multiple(image[:64, :64]).shape == (64, 64, 3)
    assert crop_to_multiple(image[:, :, 0], 8).shape == (64, 96)
    with pytest.raises(BdnError, match="smaller than the crop multiple 32"):
        crop_to_multiple(image[:20])


def test_random_patches_shapes_and_content(rng):
    images = [rng.random((20, 30), dtype=np.float32), rng.random((16, 16), dtype=np.float32)]
    patches = random_patches(images, 8, 50, rng)
    assert patches.shape == (50, 8, 8) and patches.dtype == np.float32
    colour = random_patches([rng.random((12, 12, 3), dtype=np.float32)], 12, 3, rng)
    assert colour.shape == (3, 12, 12, 3)
    # Each patch is an actual window of one of the images.
    for patch in patches[:10]:
        found = any(
            np.array_equal(patch, im[y : y + 8, x : x + 8])
            for im in images
            for y in range(im.shape[0] - 7)
            for x in range(im.shape[1] - 7)
        )
        assert found


def test_random_patches_uniform_over_positions():
    # Image 0 has 13*23 = 299 positions, image 1 has 1: patches come from image 1 about 1 time in 300.
    images = [np.zeros((20, 30), np.float32), np.ones((8, 8), np.float32)]
    patches = random_patches(images, 8, 30000, np.random.default_rng(1))
    share = patches[:, 0, 0].mean()
    assert abs(share - 1 / 300) < 0.0015
    # Images smaller than the patch are never used; all too small is an error.
    only_big = random_patches(
        [np.ones((4, 4), np.float32), np.zeros((9, 9), np.float32)], 8, 100, np.random.default_rng(2)
    )
    assert only_big.max() == 0
    with pytest.raises(BdnError, match="smaller than the patch size 8"):
        random_patches([np.ones((4, 4), np.float32)], 8, 1, np.random.default_rng(0))
    with pytest.raises(BdnError, match="same number of channels"):
        random_patches([np.ones((9, 9), np.float32), np.ones((9, 9, 3), np.float32)], 8, 1, np.random.default_rng(0))


def test_random_patch_pairs_share_positions(rng):
    clean = [rng.random((24, 40, 3), dtype=np.float32), rng.random((30, 20, 3), dtype=np.float32)]
    pairs = [(c + 1.0, c) for c in clean]  # noisy = clean + 1 everywhere
    noisy_patches, clean_patches = random_patch_pairs(pairs, 10, 40, rng)
    assert noisy_patches.shape == clean_patches.shape == (40, 10, 10, 3)
    np.testing.assert_allclose(noisy_patches, clean_patches + 1.0, atol=1e-6)
    again = random_patch_pairs(pairs, 10, 40, np.random.default_rng(5))
    np.testing.assert_array_equal(again[0], random_patch_pairs(pairs, 10, 40, np.random.default_rng(5))[0])
    with pytest.raises(BdnError, match="pair 0: noisy shape"):
        random_patch_pairs([(clean[0], clean[1])], 10, 1, rng)


# --- PolyU split ------------------------------------------------------------------------------------------


def test_polyu_group():
    assert polyu_group("Canon5D2_5_160_3200_chair_11") == ("Canon5D2", "chair")
    assert polyu_group("NikonD800_6-3_125_5000_plant__4") == ("NikonD800", "plant")
    assert polyu_group("Canon5D2_5_160_6400_reciever_13_real.JPG") == ("Canon5D2", "reciever")
    assert polyu_group("Canon80D_8_8_800_GO_11_mean") == ("Canon80D", "GO")
    for bad in ["photo", "Canon5D2_5_160_3200_chair", "Canon5D2_5_160_3200__11"]:
        with pytest.raises(BdnError, match="not a PolyU image id"):
            polyu_group(bad)


def test_polyu_split_properties():
    split = polyu_split()
    assert len(split) == 100
    assert len(polyu_ids("train")) == 70 and len(polyu_ids("heldout")) == 30
    sides = defaultdict(set)
    cameras = defaultdict(set)
    for image_id, side in split.items():
        camera, scene = polyu_group(image_id)
        sides[scene.lower()].add(side)
        cameras[side].add(camera)
    assert all(len(s) == 1 for s in sides.values()), "a scene is on both sides"
    assert cameras["train"] == cameras["heldout"] == {"Canon5D2", "Canon600D", "Canon80D", "NikonD800", "Sony"}
    with pytest.raises(BdnError, match="unknown PolyU split 'test'"):
        polyu_ids("test")


def test_polyu_split_file_is_the_rule(tmp_path):
    split = polyu_split()
    assert make_polyu_split(split) == split
    text = (Path(data.__file__).parent / "splits" / "polyu_split.csv").read_text()
    data.write_polyu_split(split, tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == text
    assert polyu_split(tmp_path / "again.csv") == split
    with pytest.raises(BdnError, match="split file not found"):
        polyu_split("no_such_split")


# --- the real sets ----------------------------------------------------------------------------------------


@pytest.mark.data
def test_real_cc_pairs(dataset_dir):
    folder = dataset_dir("CC")
    pairs = find_pairs(folder / "real", folder / "mean")
    assert len(pairs) == 15 and pairs[0].name == "5dmark3_iso3200_1"
    noisy, clean = load_pair(pairs[0])
    assert noisy.shape == clean.shape == (512, 512, 3)
    assert data.dataset_pairs("CC", folder.parent) == pairs


@pytest.mark.data
def test_real_polyu_pairs_match_split(dataset_dir):
    folder = dataset_dir("PolyU")
    pairs = find_pairs(folder / "real", folder / "mean")
    assert len(pairs) == 100
    assert {p.name for p in pairs} == set(polyu_split())  # every PolyU file exactly once in the split
    assert [p.name for p in data.polyu_pairs("heldout", folder.parent)] == polyu_ids("heldout")
