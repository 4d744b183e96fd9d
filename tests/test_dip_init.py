"""Learned DIP initialisations: the file format, the checks against a fit, learning both schemes, resuming, the CLI."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from skimage import data

import bdn.dip.init as init
import bdn.tensorfile as tensorfile
from bdn.cli import main
from bdn.dip import DipConfig, NetSpec, build_net, fit_dip
from bdn.dip.init import (
    InitConfig,
    check_init_fits,
    config_for_init,
    find_init,
    init_metadata,
    learn_init,
    load_init,
    save_init,
    shipped_inits,
)
from bdn.errors import BdnError

ROOT = Path(__file__).resolve().parents[1]
TINY = NetSpec(channels_down=(4, 8), channels_up=(4, 8), channels_skip=(0, 4))  # 2 scales: patches of 16 fit


@pytest.fixture(autouse=True)
def one_thread():
    """Bit-exact comparisons on the CPU need one thread (and keep the shared machine free)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_folder(folder: Path) -> Path:
    """Three small colour crops of scikit-image's astronaut, one of them too small to hold a patch of 16."""
    folder.mkdir(parents=True)
    photo = data.astronaut()
    for index, (top, side) in enumerate(((100, 40), (200, 32), (300, 12))):
        Image.fromarray(photo[top : top + side, top : top + side]).save(folder / f"crop{index}.png")
    return folder


def tiny_config(scheme: str, **changes) -> InitConfig:
    dip = DipConfig(net_type=TINY, input_depth=4)
    if scheme == "masked":
        dip = DipConfig(net_type=TINY, input_base="image", mask_ratio=0.5, lr=2e-3, reference_perturbation="none")
    fields = {"scheme": scheme, "dip": dip, "steps": 4, "patch": 16, "inner_steps": 3, "batch": 2, "save_every": 1}
    return InitConfig(**{**fields, **changes})


def start_weights(config: InitConfig, channels: int = 3) -> dict[str, torch.Tensor]:
    depth = config.dip.input_depth if config.dip.input_base == "noise" else channels
    torch.manual_seed(config.seed)  # what learn_init starts from
    return build_net(config.dip.net_type, depth, channels).state_dict()


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One learned initialisation per scheme: scheme -> (path, config)."""
    root = tmp_path_factory.mktemp("learned")
    folder = make_folder(root / "photos")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    made = {}
    for scheme in ("reptile", "masked"):
        config = tiny_config(scheme)
        made[scheme] = (learn_init(folder, root / "out" / f"{scheme}.safetensors", config, progress=False), config)
    yield made
    torch.set_num_threads(threads)


def test_save_load_round_trip_keeps_weights_and_metadata(tmp_path):
    state = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a.steps": torch.tensor(7)}
    metadata = {
        "format": init.FORMAT,
        "scheme": "reptile",
        "net_type": "skip",
        "input_base": "noise",
        "input_depth": "32",
        "channels": "3",
        "mask_ratio": "0.0",
        "note": "kept",
    }
    path = tmp_path / "sub" / "w.safetensors"
    save_init(path, state, metadata)
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no temporary left behind
    loaded, meta = load_init(path)
    assert meta == metadata and init_metadata(str(path)) == metadata
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert loaded["a.steps"].dtype == torch.int64


def test_load_init_refuses_what_is_not_an_initialisation(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(BdnError, match=r"junk\.safetensors: not a readable safetensors file"):
        load_init(junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(BdnError, match="not a readable safetensors file"):
        load_init(empty)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(BdnError, match=r"plain\.safetensors: not a bdn DIP initialisation"):
        load_init(plain)
    partial = tmp_path / "partial.safetensors"
    save_file({"w": torch.zeros(2)}, str(partial), metadata={"format": init.FORMAT, "scheme": "reptile"})
    with pytest.raises(BdnError, match="metadata lacks net_type, input_base"):
        load_init(partial)
    with pytest.raises(BdnError, match="'no_such_init': no such file and no shipped initialisation of that name"):
        load_init("no_such_init")


def test_shipped_inits_are_the_dip_files_of_the_package(tmp_path, monkeypatch, learned):
    # The real package: importable from the install (editable or not), holding at least its README.
    from importlib import resources

    names = [entry.name for entry in resources.files("bdn.checkpoints").iterdir()]
    assert "README.md" in names
    assert set(shipped_inits()) == {n[4:-12] for n in names if n.startswith("dip_") and n.endswith(".safetensors")}
    # A package folder with one initialisation among other files.
    (tmp_path / "dip_grey.safetensors").write_bytes(learned["reptile"][0].read_bytes())
    (tmp_path / "biqan.safetensors").write_bytes(b"x")
    (tmp_path / "dip_notes.txt").write_text("x")
    monkeypatch.setattr(tensorfile.resources, "files", lambda package: tmp_path)
    assert shipped_inits() == {"grey": tmp_path / "dip_grey.safetensors"}
    assert find_init("grey") == tmp_path / "dip_grey.safetensors"
    assert load_init("grey")[1]["scheme"] == "reptile"


def test_pyproject_lists_every_package():
    """Packages are listed by hand (to map checkpoints/ and app/ into bdn): a new folder must not be left out."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"bdn.checkpoints": "checkpoints", "bdn.app": "app"}
    assert "*.safetensors" in config["package-data"]["bdn.checkpoints"]
    folders = {"bdn.checkpoints", "bdn.app"}
    for top in ("bdn", "biqan"):
        for folder in [ROOT / top, *(ROOT / top).rglob("*")]:
            if folder.is_dir() and folder.name != "__pycache__" and any(p.is_file() for p in folder.iterdir()):
                folders.add(".".join(folder.relative_to(ROOT).parts))
    assert folders == set(config["packages"])


def test_learn_init_writes_loadable_weights_that_moved(learned):
    for scheme, (path, config) in learned.items():
        state, meta = load_init(path)
        start = start_weights(config)
        assert state.keys() == start.keys()
        moved = [k for k in start if start[k].is_floating_point() and not torch.equal(state[k], start[k])]
        assert any(k.endswith("weight") for k in moved), scheme
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
        assert meta["scheme"] == scheme and meta["steps"] == "4" and meta["channels"] == "3"
        assert meta["source"] == "photos" and meta["net_type"] == "custom"
        assert not path.with_name(path.name + ".state.pt").exists()
        log = path.with_name(path.stem + ".log.csv").read_text().splitlines()
        assert log[0] == "step,loss,seconds" and [row.split(",")[0] for row in log[1:]] == ["1", "2", "3", "4"]
    assert np.isfinite(float(log[-1].split(",")[1]))  # the masked scheme logs its loss


def test_config_for_init_and_check_init_fits(learned):
    reptile = load_init(learned["reptile"][0])
    masked = load_init(learned["masked"][0])
    config = config_for_init(reptile[1], DipConfig(num_iter=2, save_iter=1, mask_ratio=0.3, input_base="image"))
    assert config.net_type == TINY  # a custom net comes back as its NetSpec
    assert (config.input_base, config.input_depth, config.mask_ratio, config.num_iter) == ("noise", 4, 0.0, 2)
    check_init_fits(reptile[1], config, 3, "init r")
    result = fit_dip(np.full((16, 16, 3), 0.5, np.float32), config=config, init_state=reptile[0], progress=False)
    assert result.iterations == 2
    config = config_for_init(masked[1], DipConfig(input_depth=7))
    assert (config.input_base, config.input_depth, config.mask_ratio) == ("image", 7, 0.5)
    # The fit settings it was learned with come along: rate and perturbations.
    assert (config.lr, config.reference_perturbation, config.input_perturbation) == (2e-3, "none", "fixed")
    check_init_fits(masked[1], config, 3, "init m")

    with pytest.raises(BdnError, match="^init m: learned for channels=3, but this fit has channels=1$"):
        check_init_fits(masked[1], config, 1, "init m")
    with pytest.raises(BdnError, match="^init m: learned for net 'custom', but this fit uses net 'skip'$"):
        check_init_fits(masked[1], dataclasses.replace(config, net_type="skip"), 3, "init m")
    wider = dataclasses.replace(TINY, channels_up=(8, 8))
    with pytest.raises(BdnError, match="this fit uses a different net 'custom'"):
        check_init_fits(masked[1], dataclasses.replace(config, net_type=wider), 3, "init m")
    with pytest.raises(BdnError, match="learned for input_base=image, but this fit has input_base=noise"):
        check_init_fits(masked[1], dataclasses.replace(config, input_base="noise"), 3, "init m")
    with pytest.raises(BdnError, match="learned for input_depth=4, but this fit has input_depth=32"):
        check_init_fits(reptile[1], DipConfig(net_type=TINY), 3, "init r")


@pytest.mark.parametrize("scheme", ["reptile", "masked"])
def test_interrupted_run_resumes_to_the_same_weights(scheme, tmp_path, monkeypatch, learned):
    folder = make_folder(tmp_path / "photos")
    out = tmp_path / "run" / "init.safetensors"
    saves = init._save_progress

    def killed_after_two(path, net, optimizer, rng, step, settings):
        saves(path, net, optimizer, rng, step, settings)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(init, "_save_progress", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        learn_init(folder, out, tiny_config(scheme), progress=False)
    assert not out.exists() and out.with_name(out.name + ".state.pt").exists()
    monkeypatch.setattr(init, "_save_progress", saves)
    with pytest.raises(BdnError, match=r"init\.safetensors\.state\.pt: an unfinished run with other settings"):
        learn_init(folder, out, tiny_config(scheme, patch=8), progress=False)
    learn_init(folder, out, tiny_config(scheme, save_every=3), progress=False)  # save_every may change

    resumed, whole = load_init(out)[0], load_init(learned[scheme][0])[0]
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    rows = out.with_name("init.log.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["1", "2", "3", "4"]


def test_learn_init_checks_its_settings_before_writing(tmp_path):
    folder = make_folder(tmp_path / "photos")
    out = tmp_path / "out" / "x.safetensors"
    cases = [
        (tiny_config("reptile", patch=18), "patch 18 does not fit DIP net 'custom': it must be a multiple of 4"),
        (tiny_config("reptile", patch=4), "at least 8"),
        (tiny_config("reptile", patch=64), "no image is at least 64 pixels a side"),
        (tiny_config("masked", dip=DipConfig(net_type=TINY)), "needs input_base image"),
        (tiny_config("reptile", steps=0), "steps must be a positive integer"),
        (tiny_config("reptile", meta_lr=-1.0), "meta_lr must be a positive number"),
        (tiny_config("masked", dip=DipConfig(net_type=TINY, input_base="image", mask_ratio=1.5)), "mask_ratio"),
        (tiny_config("warm"), "init scheme 'warm': choose one of reptile, masked"),
    ]
    for config, message in cases:
        with pytest.raises(BdnError, match=message):
            learn_init(folder, out, config, progress=False)
    with pytest.raises(BdnError, match="channels must be 1 or 3"):
        learn_init(folder, out, tiny_config("reptile"), channels=2, progress=False)
    with pytest.raises(BdnError, match="is a folder"):
        learn_init(folder, folder, tiny_config("reptile"), progress=False)
    assert not out.parent.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["{tmp}/missing"], "missing: not a folder of images"),
        (["{tmp}/empty"], "empty: no images to learn an initialisation from"),
        (["{tmp}/photos", "--scheme", "warm"], "init scheme 'warm': choose one of reptile, masked"),
        (["{tmp}/photos", "--net-type", "skip_light", "--patch", "48"], "must be a multiple of 32"),
        (["{tmp}/photos", "--net-type", "huge"], "unknown DIP net type 'huge'"),
        (["{tmp}/photos", "--channels", "2"], "channels must be 1 or 3"),
        (["{tmp}/photos", "--scheme", "masked", "--fit-mask-ratio", "1"], "mask_ratio must be a number in [0, 1)"),
    ],
)
def test_cli_bad_input_gives_one_line_and_writes_nothing(args, message, tmp_path, capsys):
    make_folder(tmp_path / "photos")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out" / "init.safetensors"
    argv = ["dip-init", *(a.format(tmp=tmp_path) for a in args), "--out", str(out), "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("bdn dip-init: error: ") and message in err and err.count("\n") == 1
    assert not out.parent.exists()


def test_cli_needs_a_folder_and_out(tmp_path, capsys):
    assert main(["dip-init", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "bdn dip-init: error: give a FOLDER of images and --out PATH (or --list)\n"


def test_cli_learns_and_lists(tmp_path, capsys, monkeypatch):
    folder = make_folder(tmp_path / "photos")
    big = data.astronaut()[:64, :64]
    Image.fromarray(big).save(folder / "big.png")
    out = tmp_path / "out" / "dip_masked.safetensors"
    argv = ["dip-init", str(folder), "--scheme", "masked", "--out", str(out), "--net-type", "skip_light"]
    argv += ["--steps", "2", "--batch", "1", "--device", "cpu", "--threads", "1", "--fit-mask-ratio", "0.3"]
    assert main(argv) == 0
    assert f"wrote {out} (masked, 2 steps, " in capsys.readouterr().out
    meta = init_metadata(out)
    assert (meta["net_type"], meta["input_base"], meta["mask_ratio"], meta["channels"]) == (
        "skip_light",
        "image",
        "0.3",
        "3",
    )

    monkeypatch.setattr(init, "shipped_inits", lambda: {"masked": out})
    assert main(["dip-init", "--list"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("masked ") and "scheme=masked net_type=skip_light input_base=image channels=3" in line
    monkeypatch.setattr(init, "shipped_inits", dict)
    assert main(["dip-init", "--list"]) == 0
    assert capsys.readouterr().out == "no shipped DIP initialisations\n"


def test_cli_defaults_are_init_config_defaults():
    from bdn.cli import build_parser

    args = build_parser().parse_args(["dip-init", "x", "--out", "y"])
    defaults = InitConfig()
    for name in ("steps", "patch", "inner_steps", "meta_lr", "batch", "lr", "mask_ratio", "seed"):
        assert getattr(args, name) == getattr(defaults, name), name
    assert args.scheme == defaults.scheme and args.net_type == DipConfig().net_type
