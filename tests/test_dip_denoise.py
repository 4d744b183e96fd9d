"""DIP behind `bdn.denoise(..., method="dip")` and `bdn denoise --method dip`: any size in, the same size out."""

from __future__ import annotations

import numpy as np
import pytest

import bdn
from bdn.cli import main
from bdn.dip.denoise import default_iterations, pad_for_net, prepare
from bdn.errors import BdnError, BdnWarning
from bdn.io import read_image, write_image


def _noisy_crop(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    image = data.astronaut() if len(shape) == 3 else data.camera()
    clean = image[100 : 100 + shape[0], 180 : 180 + shape[1]].astype(np.float32) / 255
    return clean, bdn.add_noise(clean, "gaussian", 25, seed=seed)


@pytest.mark.parametrize("shape", [(50, 61), (64, 64), (7, 130, 3), (1, 1)])
def test_pad_for_net_reaches_the_sizes_and_keeps_the_image(shape):
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    padded, size = pad_for_net(image, 32, 64)
    assert size == shape[:2]
    assert padded.shape[0] % 32 == 0 and padded.shape[1] % 32 == 0 and min(padded.shape[:2]) >= 64
    assert padded.shape[2:] == shape[2:]
    np.testing.assert_array_equal(padded[: shape[0], : shape[1]], image)
    # Symmetric reflection: the first padded row repeats the last image row.
    if padded.shape[0] > shape[0]:
        np.testing.assert_array_equal(padded[shape[0], : shape[1]], image[-1])


def test_prepare_picks_the_judge_and_checks_its_arguments():
    _, noisy = _noisy_crop((40, 40, 3))
    job = prepare(noisy, sigma=25, iterations=50, stop="noise", init="none", net_type="skip_light")
    assert job.judge.name == "noise" and job.judge.sigma == 25
    assert job.padded.shape == (64, 64, 3) and job.config.num_iter == 50
    assert prepare(noisy, stop="none", init="none", net_type="skip_light").judge is None
    with pytest.raises(BdnError, match="stop must be one of"):
        prepare(noisy, stop="later")
    with pytest.raises(BdnError, match="iterations must be a whole number"):
        prepare(noisy, iterations=0)
    with pytest.raises(BdnError, match="unknown DIP net type"):
        prepare(noisy, init="none", net_type="huge")


def test_default_iterations_grow_with_the_side_up_to_twice_at_512():
    # The seed's loop peaks later on larger images (benchmarks/records/dip_peaks_skip64_cpu.md).
    assert default_iterations(32, 32) == default_iterations(256, 256) == 3000
    assert default_iterations(384, 384) == 4500 and default_iterations(256, 1024) == 6000  # side: sqrt of the pixels
    assert default_iterations(512, 512) == default_iterations(3000, 4000) == 6000
    assert default_iterations(512, 512, masked=True) == 400  # the blind-spot fit: one cap
    _, noisy = _noisy_crop((300, 300))
    assert prepare(noisy, init="none", net_type="skip_light").config.num_iter == 3516  # 3000 x 300 / 256
    assert prepare(noisy, iterations=77, init="none", net_type="skip_light").config.num_iter == 77


def test_dip_method_denoises_any_size_and_stops_by_itself(torch_one_thread):
    clean, noisy = _noisy_crop((50, 61, 3))
    out = bdn.denoise(noisy, "dip", iterations=400, init="none", net_type="skip_light", sigma=30)
    assert out.shape == noisy.shape and out.dtype == np.float32
    # Fixed seeds: the residual reaches 30/255 near iteration 290, several dB above the noisy input (20.4 dB).
    assert bdn.psnr(clean, out) > bdn.psnr(clean, noisy) + 2.0
    job = prepare(noisy, sigma=30, iterations=400, init="none", net_type="skip_light")
    from bdn.dip.fit import fit_dip

    result = fit_dip(job.padded, None, job.config, judge=job.judge, progress=False)
    assert result.stopped_early and result.judge_name == "noise"  # the discrepancy principle ended the fit
    np.testing.assert_array_equal(job.crop(result.judge_image), out)


def test_dip_grey_and_unknown_parameter(torch_one_thread):
    clean, noisy = _noisy_crop((64, 64))
    out = bdn.denoise(noisy, "dip", iterations=20, init="none", net_type="skip_light", stop="none")
    assert out.shape == (64, 64)
    with pytest.raises(BdnError, match="dip has no parameter"):
        bdn.denoise(noisy, "dip", iters=5)


def test_dip_time_budget_ends_the_fit(torch_one_thread, monkeypatch):
    import bdn.dip.fit as fit

    seen = []
    real_fit = fit.fit_dip

    def spy(*args, **kwargs):
        result = real_fit(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(fit, "fit_dip", spy)
    _, noisy = _noisy_crop((64, 64))
    options = dict(iterations=200, init="none", net_type="skip_light", sigma=1.0)  # a judge that fires late
    with pytest.warns(BdnWarning, match="budget ended the fit at iteration 1, before its judge .noise. chose; "):
        out = bdn.denoise(noisy, "dip", minutes=1e-9, **options)
    assert seen[-1].iterations == 1 and seen[-1].stopped_early  # the first iteration is past the budget
    # One iteration in, the output is nothing like the image: the noisy input comes back, not that iterate.
    np.testing.assert_array_equal(out, noisy)
    bdn.denoise(noisy, "dip", minutes=10, **{**options, "iterations": 3})
    assert seen[-1].iterations == 3  # a budget not reached changes nothing
    for bad in (0, -1.0, "5", True):
        with pytest.raises(BdnError, match="minutes must be a number > 0"):
            bdn.denoise(noisy, "dip", minutes=bad, **options)


def test_budget_keeps_an_iterate_only_when_the_noise_level_says_it_beats_the_input():
    from scipy.ndimage import gaussian_filter

    from bdn.dip.denoise import better_than_input

    clean, noisy = _noisy_crop((64, 64, 3))
    assert better_than_input(gaussian_filter(noisy, (1, 1, 0)), noisy, 25.0)[0]  # a light smoothing: better
    better, residual = better_than_input(gaussian_filter(noisy, (6, 6, 0)), noisy, 25.0)
    assert not better and residual > 25 * 2**0.5  # a heavy blur removed the image too
    assert better_than_input(clean, noisy, 25.0)[0]


def test_tiles_cover_the_image_and_blend_back_exactly(monkeypatch, torch_one_thread):
    import bdn.dip.denoise as denoise

    assert denoise.plan_tiles(100, 90, 128, 32) == [(0, 0, 100, 90)]
    boxes = denoise.plan_tiles(300, 200, 128, 32)
    covered = np.zeros((300, 200), int)
    for top, left, bottom, right in boxes:
        assert bottom - top <= 128 and right - left <= 128
        covered[top:bottom, left:right] += 1
    assert covered.min() >= 1 and len(boxes) == 3 * 2
    tops = sorted({box[0] for box in boxes})
    assert all(b - a <= 128 - 32 for a, b in zip(tops, tops[1:], strict=False))  # neighbours overlap enough
    # Tiles that give back their own pixels blend back to the image itself (weights sum to one everywhere).
    monkeypatch.setattr(denoise, "_fit_one", lambda job, image, *args: (image.astype(np.float32), None))
    image = np.random.default_rng(0).random((300, 200, 3), dtype=np.float32)
    with pytest.warns(BdnWarning, match="in 6 tiles of at most 128x128, blended over 32 pixels .as asked."):
        out = denoise.dip(image, tile=128, sigma=10)
    np.testing.assert_allclose(out, image, atol=1e-6)
    # Over the memory limit: tiles chosen by memory, and said so; a limit no tile fits is one line.
    from bdn.dip.memory import fit_bytes

    limit = fit_bytes("skip_light", 192, 192, 3, 32, "bf16") / 2**30
    assert fit_bytes("skip_light", 320, 224, 3, 32, "bf16") > 1.8 * limit  # linear in the pixels
    with pytest.warns(BdnWarning, match=f"over the {limit:.1f} GB limit"):
        denoise.dip(image, sigma=10, memory_gb=limit, net_type="skip_light", precision="bf16")
    with pytest.raises(BdnError, match="even a 64x64 tile needs more than the memory limit of 0.0 GB"):
        denoise.dip(image, sigma=10, memory_gb=0.001)
    for bad in (32, 100.5, "big", True):
        with pytest.raises(BdnError, match="tile must be a whole number of pixels >= 64"):
            denoise.dip(image, tile=bad)


def test_cli_denoise_with_dip(tmp_path, torch_one_thread, capsys):
    _, noisy = _noisy_crop((48, 48, 3))
    write_image(tmp_path / "in.png", noisy)
    code = main(
        ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--method", "dip"]
        + ["--param", "iterations=30", "--param", "init=none", "--param", "net_type=skip_light", "--param", "stop=none"]
    )
    assert code == 0
    out, _ = read_image(tmp_path / "out" / "in.png")
    assert out.shape == (48, 48, 3)
    assert (
        main(
            ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "o2"), "--method", "dip"]
            + ["--param", "init=nowhere.safetensors"]
        )
        == 1
    )
    assert "initialisation 'nowhere.safetensors'" in capsys.readouterr().err
    assert not (tmp_path / "o2" / "in.png").exists()


def test_default_is_the_seeds_loop_and_the_shipped_init_a_blind_spot_fit(torch_one_thread):
    """Default: the seed's loop on the lean generator, stopped by the noise rule; the shipped masked init: a
    blind-spot fit, fixed budget."""
    from bdn.dip.init import shipped_inits

    assert "polyu_masked" in shipped_inits()
    clean, noisy = _noisy_crop((40, 50, 3))
    default = prepare(noisy)
    assert default.init_state is None and default.judge.name == "noise" and default.config.num_iter == 3000
    assert (default.config.input_base, default.config.mask_ratio, default.config.lr) == ("noise", 0.0, 0.01)
    assert default.config.net_type == "skip64" and default.config.precision == "auto"
    assert prepare(noisy, net_type="skip").config.net_type == "skip"  # the seed's own net, by name
    job = prepare(noisy, init="polyu_masked")
    assert job.config.mask_ratio == 0.5 and job.config.input_base == "image" and job.init_state is not None
    assert (job.config.num_iter, job.judge, job.config.lr, job.config.ema) == (400, None, 0.002, 0.95)
    out = bdn.denoise(noisy, "dip", init="polyu_masked", iterations=100)
    assert out.shape == noisy.shape
    # Fixed seeds: 100 iterations take this crop (noisy 20.5 dB, far stronger noise than PolyU's) to 24.4 dB.
    assert bdn.psnr(clean, out) > bdn.psnr(clean, noisy) + 3.0
    grey = prepare(noisy.mean(axis=2), init="polyu_masked")  # grey meets the colour init as three equal channels
    assert grey.grey_as_colour and grey.padded.shape == (64, 64, 3)
    assert grey.crop(grey.padded).shape == (40, 50)
    with pytest.raises(BdnError, match="is for net 'skip'"):
        prepare(noisy, init="polyu_masked", net_type="skip_light")


def test_cli_prints_the_budgets_note_beside_the_file(tmp_path, torch_one_thread, capsys):
    _, noisy = _noisy_crop((48, 48, 3))
    write_image(tmp_path / "in.png", noisy)
    params = ["minutes=1e-9", "net_type=skip_light", "sigma=1", "threads=1", "precision=fp32"]
    code = main(
        ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--method", "dip"]
        + [arg for param in params for arg in ("--param", param)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"note: {tmp_path / 'in.png'}: the 1e-09-minute budget ended the fit at iteration 1" in out
    assert "returned the input unchanged" in out
    assert read_image(tmp_path / "out" / "in.png")[0].shape == (48, 48, 3)
