"""DIP core: the skip generator, the fitting loop (seeding, fall-back, metrics, stopping) and the judges.

Everything here is small: tiny images and a tiny net (`TINY`), except the parameter counts of the seed's nets and
one short fit of 'skip_light' that must beat the noisy input.
"""

import io
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

import bdn.dip.fit as fit_module
from bdn.devices import pick_device
from bdn.dip.config import DipConfig
from bdn.dip.fit import fit_dip
from bdn.dip.judges import EMVJudge, NoiseJudge, NoneJudge, OracleJudge, WMVJudge, make_judge
from bdn.dip.nets import NET_TYPES, NetSpec, build_net, check_size, count_parameters, min_size, smallest_side
from bdn.errors import BdnError
from bdn.metrics import psnr, ssim
from bdn.noise import estimate_noise_level
from bdn.tensors import to_nchw
from bdn.torch_metrics import ssim_score

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# 3 scales: sides must be multiples of 8 and at least 16.
TINY = NetSpec(channels_down=(4, 8, 8), channels_up=(4, 8, 8), channels_skip=(0, 2, 2))


def tiny_config(**changes) -> DipConfig:
    base = DipConfig(net_type=TINY, input_depth=4, num_iter=5, save_iter=2, show_iter=3)
    return replace(base, **changes)


def smooth_image(size: int = 32, colour: bool = True) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    planes = [0.2 + 0.6 * x, 0.3 + 0.4 * np.sin(3 * y), 0.5 + 0.3 * np.cos(2 * (x + y))]
    return (np.stack(planes, -1) if colour else planes[0]).astype(np.float32)


def with_noise(image: np.ndarray, sigma: float = 25, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (image + rng.normal(0, sigma / 255, image.shape)).astype(np.float32)


# --- networks ----------------------------------------------------------------------------------------


def test_parameter_counts_of_the_seed_nets():
    assert count_parameters(build_net("skip", 32, 3)) == 2_217_831  # the seed's run_BDN default
    assert count_parameters(build_net("skip_light", 32, 3)) == 574_915
    assert count_parameters(build_net("skip64", 32, 3)) == 572_455  # bdn's default: a quarter of the seed's
    # BN running statistics are buffers: not counted, but present in the state_dict.
    assert any("running_mean" in key for key in build_net("skip_light", 32, 3).state_dict())


def test_net_output_shape_and_range():
    net = build_net(TINY, 5, 1)
    out = net(torch.rand(2, 5, 16, 24))
    assert out.shape == (2, 1, 16, 24)
    assert float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    raw = build_net(replace(TINY, need_sigmoid=False, upsample_mode="nearest", padding="zero"), 3, 3)
    assert raw(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    for activation in ("ReLU", "ELU"):
        assert build_net(replace(TINY, activation=activation), 3, 3)(torch.rand(1, 3, 16, 16)).shape[1] == 3


def test_sizes_the_nets_accept():
    assert min_size("skip") == 32 and min_size("skip_light") == 32 and min_size(TINY) == 8
    # The coarsest level needs 2x2 pixels (training-mode batch norm, reflection padding): 'skip' needs 64.
    assert smallest_side("skip") == 64 and smallest_side(TINY) == 16
    check_size("skip", 64, 96)
    with pytest.raises(BdnError, match=r"96x40 pixels .* multiples of 32 and at least 64"):
        check_size("skip", 40, 96)
    with pytest.raises(BdnError, match="at least 64"):
        check_size("skip", 32, 64)


def test_bad_net_names_and_specs():
    with pytest.raises(BdnError, match="unknown DIP net type 'unet'.*skip, skip64, skip_light"):
        build_net("unet", 32, 3)
    with pytest.raises(BdnError, match="channels_up has 2 entries"):
        build_net(replace(TINY, channels_up=(4, 8)), 3, 3)
    with pytest.raises(BdnError, match="upsample_mode"):
        build_net(replace(TINY, upsample_mode="bicubic"), 3, 3)
    with pytest.raises(BdnError, match="filter_size_down must be an odd"):
        build_net(replace(TINY, filter_size_down=4), 3, 3)
    with pytest.raises(BdnError, match="input_depth"):
        build_net(TINY, 0, 3)
    assert set(NET_TYPES) >= {"skip", "skip_light"}


# --- the fitting loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize("colour", [False, True])
def test_fit_shapes_range_and_history(colour):
    clean = smooth_image(32, colour)
    result = fit_dip(with_noise(clean), clean, tiny_config(), progress=False)
    for image in (result.ema, result.raw, result.best_image):
        assert image.shape == clean.shape and image.dtype == np.float32
        assert image.min() >= 0 and image.max() <= 1
    assert [row["iteration"] for row in result.history] == [1, 2, 3, 4, 5]
    assert [row["snapshot"] for row in result.history] == [False, True, False, True, False]
    assert all((row["ssim"] is not None) == row["snapshot"] for row in result.history)
    assert result.best_iteration in (2, 4) and result.iterations == 5 and not result.stopped_early
    # Loop figures (float32 torch) agree with bdn.metrics on the final EMA output.
    assert result.history[-1]["psnr"] == pytest.approx(psnr(clean, result.ema), abs=1e-3)
    assert result.final_psnr == pytest.approx(psnr(clean, result.ema))
    assert result.peak_psnr == max(row["psnr"] for row in result.history)
    assert result.parameters == count_parameters(build_net(TINY, 4, 3 if colour else 1))


def test_fit_without_clean_image():
    result = fit_dip(with_noise(smooth_image(16)), None, tiny_config(num_iter=3), progress=False)
    assert all(row["psnr"] is None and row["ssim"] is None and row["psnr_raw"] is None for row in result.history)
    assert all(row["loss"] > 0 and row["psnr_noisy"] > 0 for row in result.history)
    assert result.best_iteration is None and result.final_psnr is None


def test_sizes_that_do_not_fit_the_net_are_refused():
    with pytest.raises(BdnError, match=r"noisy image of 36x32 pixels .* multiples of 8"):
        fit_dip(np.zeros((32, 36, 3), np.float32), config=tiny_config(), progress=False)
    with pytest.raises(BdnError, match="multiples of 32 and at least 64"):
        fit_dip(np.zeros((32, 32, 3), np.float32), config=DipConfig(net_type="skip"), progress=False)
    with pytest.raises(BdnError, match="clean image has shape"):
        fit_dip(np.zeros((16, 16, 3), np.float32), np.zeros((16, 16), np.float32), tiny_config(), progress=False)
    with pytest.raises(BdnError, match=r"\(H, W, 3\)"):
        fit_dip(np.zeros((16, 16, 4), np.float32), config=tiny_config(), progress=False)


def test_bad_config_values_are_refused():
    noisy = np.zeros((16, 16), np.float32)
    for changes, message in (
        ({"input_base": "meshgrid"}, "input_base must be one of noise, image, smoothed"),
        ({"reference_perturbation": "sometimes"}, "reference_perturbation"),
        ({"num_iter": 0}, "num_iter must be a positive integer"),
        ({"ema": 1.5}, "ema"),
        ({"fallback_db": -1}, "fallback_db"),
        ({"net_type": "nope"}, "unknown DIP net type"),
    ):
        with pytest.raises(BdnError, match=message):
            fit_dip(noisy, config=tiny_config(**changes), progress=False)


def test_seeded_runs_are_reproducible():
    noisy = with_noise(smooth_image(32))
    first = fit_dip(noisy, None, tiny_config(), progress=False)
    again = fit_dip(noisy, None, tiny_config(), progress=False)
    other = fit_dip(noisy, None, tiny_config(seed=1), progress=False)
    assert np.array_equal(first.ema, again.ema) and np.array_equal(first.raw, again.raw)
    assert [row["loss"] for row in first.history] == [row["loss"] for row in again.history]
    assert not np.array_equal(first.ema, other.ema)
    # The caller's global RNG is left as it was.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_dip(noisy, None, tiny_config(num_iter=1), progress=False)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize(
    "changes",
    [
        {"input_base": "image", "input_perturbation": "random", "reference_perturbation": "none"},
        {"input_base": "smoothed", "input_perturbation": "none", "reference_perturbation": "random"},
        {"fallback_db": None, "channels_last": True},
    ],
)
def test_input_and_reference_options_run(changes):
    clean = smooth_image(16)
    result = fit_dip(with_noise(clean), clean, tiny_config(num_iter=3, **changes), progress=False)
    assert result.ema.shape == clean.shape and np.isfinite([row["loss"] for row in result.history]).all()
    if changes.get("fallback_db", 8.0) is None:
        assert all(row["psnr_noisy"] is None for row in result.history)


def test_dip_improves_on_the_noisy_image():
    # 64x64 smooth colour image, Gaussian sigma 25 (noisy: 20.2 dB), seed defaults but a 3-scale net of 39 k
    # parameters: after 150 iterations the EMA output measured 25.3 dB when this test was written ('skip_light'
    # gave 25.1 dB, at twice the time); ask for 3 dB.
    clean = smooth_image(64)
    noisy = with_noise(clean, 25)
    small = NetSpec(channels_down=(8, 16, 32), channels_up=(8, 16, 32), channels_skip=(0, 4, 4))
    config = DipConfig(net_type=small, num_iter=150, save_iter=50, show_iter=50)
    result = fit_dip(noisy, clean, config, progress=False)
    assert psnr(clean, noisy) == pytest.approx(20.2, abs=0.2)
    assert result.final_psnr > psnr(clean, noisy) + 3.0
    assert result.fallbacks == []


class _Sabotaged(torch.nn.Module):
    """Wraps a net; its output turns white on one forward call, and it records the weights at every call."""

    def __init__(self, net: torch.nn.Module, at: int, record) -> None:
        super().__init__()
        # `record` (a list's append) survives the deep copy that makes a bf16 fit's mirror: both write one list.
        self.net, self.at, self.calls, self.record = net, at, 0, record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.record(torch.cat([p.detach().reshape(-1) for p in self.net.parameters()]))
        out = self.net(x)
        return out * 0 + 1 if self.calls == self.at else out


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fall_back_restores_the_last_good_weights(monkeypatch, precision):
    weights = []  # weights[i] = the weights iteration i + 1 started from

    def sabotaged_net(*args):
        return _Sabotaged(build_net(*args), at=6, record=weights.append)

    monkeypatch.setattr(fit_module, "build_net", sabotaged_net)
    emas = {}

    def keep(iteration, frame):
        emas[iteration] = frame.ema()

    clean = smooth_image(32)
    config = tiny_config(num_iter=9, fallback_db=3.0, precision=precision)
    result = fit_dip(with_noise(clean), clean, config, on_iteration=keep, progress=False)
    assert len(weights) == 9 and result.precision == precision
    assert result.fallbacks == [6]
    assert [row["fallback"] for row in result.history] == [i == 6 for i in range(1, 10)]
    assert result.history[5]["psnr_noisy"] < result.history[4]["psnr_noisy"] - 3
    # Iteration 7 starts again from the weights iteration 5 started from, which made the last good output;
    # ordinary iterations do move the weights.
    assert torch.equal(weights[6], weights[4])
    assert not torch.equal(weights[5], weights[4])
    # The collapsed output never enters the EMA.
    assert np.array_equal(emas[6], emas[5])
    assert not np.array_equal(emas[7], emas[6])


def test_on_iteration_can_stop_the_fit():
    seen = []

    def stop_at_three(iteration, frame):
        seen.append((iteration, frame.is_snapshot, frame.raw().shape, frame.metrics()["iteration"]))
        return iteration == 3

    result = fit_dip(
        with_noise(smooth_image(16, False)), None, tiny_config(), on_iteration=stop_at_three, progress=False
    )
    assert result.iterations == 3 and result.stopped_early and len(result.history) == 3
    assert seen == [(1, False, (16, 16), 1), (2, True, (16, 16), 2), (3, False, (16, 16), 3)]


def test_judges_inside_the_loop():
    clean = smooth_image(16)
    noisy = with_noise(clean)
    wmv = WMVJudge(window=3, patience=2)
    result = fit_dip(noisy, clean, tiny_config(num_iter=40), judge=wmv, progress=False)
    assert result.judge_name == "wmv" and result.stopped_early
    assert result.iterations == wmv.choice() + 2  # stopped `patience` variance updates after the minimum
    assert result.judge_iteration == wmv.choice() and result.judge_image.shape == clean.shape
    oracle = OracleJudge(clean)  # fed the EMA output every iteration
    result = fit_dip(noisy, clean, tiny_config(num_iter=8), judge=oracle, progress=False)
    assert result.judge_iteration == result.peak_iteration
    assert psnr(clean, result.judge_image) == pytest.approx(result.peak_psnr, abs=1e-3)


def test_init_state_is_loaded_and_checked():
    noisy = with_noise(smooth_image(16))
    first = fit_dip(noisy, None, tiny_config(num_iter=3), progress=False)
    resumed = fit_dip(noisy, None, tiny_config(num_iter=1), init_state=first.state_dict, progress=False)
    fresh = fit_dip(noisy, None, tiny_config(num_iter=1), progress=False)
    assert not np.array_equal(resumed.raw, fresh.raw)
    with pytest.raises(BdnError, match="init_state does not fit DIP net"):
        fit_dip(noisy, None, tiny_config(input_depth=6, num_iter=1), init_state=first.state_dict, progress=False)


def test_torch_ssim_equals_scikit_image(rng):
    for shape in ((20, 24), (20, 24, 3)):
        clean = rng.random(shape)
        out = np.clip(clean + rng.normal(0, 0.1, shape), -0.1, 1.1)  # ssim clips the output, as bdn.metrics does
        nchw = partial(to_nchw, dtype=torch.float64)
        assert float(ssim_score(nchw(out), nchw(clean))) == pytest.approx(ssim(clean, out), abs=1e-10)


def test_pick_device():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    assert pick_device(None) == pick_device("auto")
    with pytest.raises(BdnError, match="not a device name"):
        pick_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(BdnError, match="no CUDA GPU"):
            pick_device("cuda")


# --- judges --------------------------------------------------------------------------------------------


def approach_then_diverge(turn: int, count: int, rng: np.random.Generator, shape=(8, 8, 3)) -> list[np.ndarray]:
    """Iterates whose fresh noise shrinks to nothing at `turn`, then grows again: the variance bottoms there."""
    target = rng.random(shape)
    return [target + (abs(t - turn) / turn + 0.01) * rng.normal(0, 0.1, shape) for t in range(count)]


def brute_force_variance(window: list[np.ndarray]) -> float:
    mean = np.mean(window, axis=0)
    return float(np.mean([np.mean((x - mean) ** 2) for x in window]))


def test_wmv_chooses_near_the_turning_point_and_stops_after_patience(rng):
    images = approach_then_diverge(turn=60, count=200, rng=rng)
    judge = WMVJudge(window=10, patience=30)
    stopped_at = None
    for iteration, image in enumerate(images):
        if judge.update(iteration, image):
            stopped_at = iteration
            break
    # The least-variance window straddles the turn; its newest iterate is about half a window past it.
    assert 60 <= judge.choice() <= 60 + 10
    assert stopped_at == judge.choice() + 30
    assert np.array_equal(judge.chosen_image(), images[judge.choice()].astype(np.float32))


def test_wmv_running_variance_equals_brute_force(rng):
    images = [rng.random((6, 5)) for _ in range(37)]  # several re-sums of the running totals (window 7)
    judge = WMVJudge(window=7, patience=1000)
    for iteration, image in enumerate(images):
        judge.update(iteration, image)
    expected = [(i, brute_force_variance(images[i - 6 : i + 1])) for i in range(6, 37)]
    got = judge.variances
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-10)
    # Tensors in (C, H, W), batched host reads: the same figures and choice.
    batched = WMVJudge(window=7, patience=1000, sync_every=4)
    for iteration, image in enumerate(images):
        batched.update(iteration, torch.from_numpy(image)[None])
    np.testing.assert_allclose([v for _, v in batched.variances], [v for _, v in expected], rtol=1e-10)
    assert batched.choice() == judge.choice()


def test_wmv_stride_watches_only_multiples_and_equals_the_replay_of_those(rng):
    images = approach_then_diverge(turn=300, count=900, rng=rng)
    strided = WMVJudge(window=3, patience=6, stride=20, source="ema")
    replay = WMVJudge(window=3, patience=6)  # an offline replay of snapshots saved every 20 iterations
    stops = {}
    for iteration, image in enumerate(images, start=1):
        if "strided" not in stops and strided.update(iteration, image):
            stops["strided"] = iteration
        if iteration % 20 == 0 and "replay" not in stops and replay.update(iteration, image):
            stops["replay"] = iteration
    assert strided.source == "ema" and WMVJudge().source == "raw"
    assert strided.variances == replay.variances and all(i % 20 == 0 for i, _ in strided.variances)
    assert strided.choice() == replay.choice() and stops["strided"] == stops["replay"]
    assert 280 <= strided.choice() <= 380


def test_wmv_bad_source_and_stride_are_one_line(rng):
    with pytest.raises(BdnError, match="source must be 'raw' or 'ema'"):
        WMVJudge(source="mean")
    with pytest.raises(BdnError, match="stride"):
        WMVJudge(stride=0)


def test_wmv_batched_reads_stop_a_little_late_but_choose_the_same(rng):
    images = approach_then_diverge(turn=40, count=150, rng=rng)
    stops = {}
    for sync_every in (1, 5):
        judge = WMVJudge(window=8, patience=20, sync_every=sync_every)
        for iteration, image in enumerate(images):
            if judge.update(iteration, torch.from_numpy(image)):
                break
        stops[sync_every] = (iteration, judge.choice())
    assert stops[1][1] == stops[5][1]
    assert 0 <= stops[5][0] - stops[1][0] < 5


def test_emv_follows_its_recurrence_and_finds_the_turn(rng):
    images = approach_then_diverge(turn=60, count=200, rng=rng)
    alpha = 0.2
    judge = EMVJudge(alpha=alpha, patience=40, warmup=5)
    mean, var, expected = images[0], 0.0, []
    for iteration, image in enumerate(images):
        if iteration:
            delta = image - mean
            mean = mean + alpha * delta
            var = (1 - alpha) * (var + alpha * np.mean(delta**2))
        expected.append((iteration, var))
        if judge.update(iteration, image):
            break
    got = judge.variances
    assert got[0][0] == 5  # the warm-up iterates are no candidates
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected[5:]], rtol=1e-10)
    assert 55 <= judge.choice() <= 70
    assert iteration == judge.choice() + 40


def test_oracle_picks_the_true_best(rng):
    clean = 0.45 + 0.1 * rng.random((8, 8, 3))  # iterates stay inside [0, 1]: no clipping
    errors = [0.3, 0.2, 0.05, 0.1, 0.07, 0.4]  # RMSE of each iterate: the best is the third
    images = [clean + e * rng.choice([-1, 1], clean.shape) for e in errors]
    judge = OracleJudge(clean)
    for iteration, image in enumerate(images):
        assert judge.update(iteration * 10, image) is False
    assert judge.choice() == 20
    assert [p for _, p in judge.psnrs] == pytest.approx([psnr(clean, image) for image in images], abs=1e-9)
    np.testing.assert_allclose(judge.chosen_image(), images[2], atol=1e-6)
    on_tensors = OracleJudge(clean)
    for iteration, image in enumerate(images):
        on_tensors.update(iteration, torch.from_numpy(image).permute(2, 0, 1)[None].float())
    assert on_tensors.choice() == 2


def test_none_judge_and_make_judge(rng):
    judge = make_judge("none")
    assert isinstance(judge, NoneJudge)
    for iteration in (1, 2, 5):
        assert judge.update(iteration, np.zeros((4, 4))) is False
    assert judge.choice() == 5
    assert isinstance(make_judge("wmv", window=5, patience=7), WMVJudge)
    assert make_judge("oracle", clean=np.zeros((4, 4))).name == "oracle"
    with pytest.raises(BdnError, match="unknown judge 'nima'"):
        make_judge("nima")
    with pytest.raises(BdnError, match="judge oracle:.*clean"):
        make_judge("oracle")
    with pytest.raises(BdnError, match="window must be an integer >= 2"):
        make_judge("wmv", window=1)
    with pytest.raises(BdnError, match="no iterate seen yet"):
        make_judge("wmv").choice()
    later = make_judge("emv")
    later.update(3, np.zeros((4, 4)))
    with pytest.raises(BdnError, match="iterations must increase"):
        later.update(3, np.zeros((4, 4)))


def towards_noisy(count: int = 101, sigma: float = 20, seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """A noisy image (smooth colour + Gaussian noise, unclipped) and iterates that go straight from flat grey to it.

    The residual variance of iterate t is (1 - t / T)^2 * D, D = mean((noisy - 0.5)^2): it falls through any
    threshold below D exactly once.
    """
    noisy = with_noise(smooth_image(32), sigma, seed).astype(np.float64)
    start = np.full_like(noisy, 0.5)
    return noisy, [start + (noisy - start) * t / (count - 1) for t in range(count)]


def test_noise_judge_fires_where_the_residual_reaches_the_noise(rng):
    noisy, iterates = towards_noisy()
    judge = NoiseJudge(noisy=noisy, sigma=20)
    assert judge.threshold == pytest.approx((20 / 255) ** 2) and judge.source == "ema" and not judge.sigma_estimated
    residuals = [float(np.mean((x - noisy) ** 2)) for x in iterates]
    first = next(t for t, r in enumerate(residuals) if r <= (20 / 255) ** 2)
    d = np.mean((noisy - 0.5) ** 2)
    assert first == int(np.ceil(100 * (1 - (20 / 255) / np.sqrt(d))))  # the closed form: iterate 59 here
    stops = [judge.update(10 * t, x) for t, x in enumerate(iterates)]
    # patience 0: stop at once; iterations are the caller's numbers
    assert stops.index(True) == first and judge.choice() == 10 * first
    assert judge.residuals == [(10 * t, pytest.approx(r, rel=1e-12)) for t, r in enumerate(residuals)]
    assert dict(judge.scores)[judge.choice()] <= judge.threshold < dict(judge.scores)[judge.choice() - 10]
    assert np.array_equal(judge.chosen_image(), iterates[first].astype(np.float32))

    # Tensors (C, H, W), batched reads and patience: the same choice; the stop `patience` updates later, late by
    # less than a batch.
    batched = make_judge("noise", noisy=noisy, sigma=20, patience=3, sync_every=4)
    for t, x in enumerate(iterates):
        if batched.update(t, torch.from_numpy(x).permute(2, 0, 1)):
            break
    assert batched.choice() == first and first + 3 <= t < first + 3 + 4
    np.testing.assert_allclose(batched.chosen_image(), iterates[first], atol=1e-6)

    # factor > 1 stops earlier; a level no iterate reaches never fires: the last iterate is the choice.
    early = NoiseJudge(noisy=noisy, sigma=20, factor=1.5)
    never = NoiseJudge(noisy=noisy, sigma=0.01)
    assert not any(never.update(t, x) for t, x in enumerate(iterates[:-1]))
    assert never.choice() == 99 and never.latest_choice == 99 and never.chosen_image() is None
    assert next(t for t, x in enumerate(iterates) if early.update(t, x)) < first


def test_noise_judge_estimates_sigma_when_not_given():
    noisy, iterates = towards_noisy(sigma=20)
    judge = make_judge("noise", noisy=noisy.astype(np.float32))
    assert judge.sigma_estimated and judge.sigma == estimate_noise_level(noisy.astype(np.float32))
    assert judge.sigma == pytest.approx(20, abs=3) and judge.threshold == pytest.approx((judge.sigma / 255) ** 2)
    grey = NoiseJudge(noisy=noisy[..., 0], factor=2.0)
    assert grey.threshold == pytest.approx((2 * estimate_noise_level(noisy[..., 0].astype(np.float32)) / 255) ** 2)
    for t, x in enumerate(iterates):  # grey iterates as numpy (H, W) and tensors (1, H, W)
        grey.update(t, x[..., 0] if t % 2 else torch.from_numpy(x[None, ..., 0]))
    assert 0 < grey.choice() < 100


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, r"judge noise: needs the noisy image being fitted \(noisy=\.\.\.\)"),
        ({"noisy": np.zeros((16, 16, 4))}, r"judge noise: noisy image must be \(H, W\) or \(H, W, 3\)"),
        ({"noisy": np.full((16, 16), np.nan), "sigma": 5}, "judge noise: noisy image has NaN or infinite values"),
        ({"sigma": 0}, "judge noise: sigma must be a number > 0, got 0"),
        ({"sigma": float("inf")}, "judge noise: sigma must be a number > 0, got inf"),
        ({"sigma": "25"}, "judge noise: sigma must be a number > 0, got '25'"),
        ({"factor": -1.0}, "judge noise: factor must be a number > 0, got -1.0"),
        ({"patience": -1}, "judge noise: patience must be an integer >= 0, got -1"),
        ({"sync_every": 0}, "judge noise: sync_every must be an integer >= 1, got 0"),
        ({"window": 3}, "judge noise: .*unexpected keyword argument 'window'"),
        ({"noisy": np.full((8, 8), 0.5)}, "judge noise: cannot estimate the noise level .*8x8.*; give sigma"),
        ({"noisy": np.full((32, 32), 0.5)}, r"noise level is \S+ \(no noise found\); give sigma"),
    ],
)
def test_noise_judge_refuses_bad_options(options, message):
    if "noisy" not in options and options:
        options = {"noisy": np.full((16, 16), 0.5), **options}
    with pytest.raises(BdnError, match=message) as caught:
        make_judge("noise", **options)
    assert "\n" not in str(caught.value)


def saved_and_loaded(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(
    ("name", "options", "cut"),
    [
        ("wmv", {"window": 10, "patience": 15}, 47),
        ("wmv", {"window": 10, "patience": 15, "sync_every": 4}, 46),  # mid-batch: pending variances are saved
        ("emv", {"alpha": 0.2, "patience": 20, "warmup": 5}, 47),
        ("emv", {"alpha": 0.2, "patience": 20, "warmup": 5, "sync_every": 3}, 44),
        ("noise", {"sigma": 20, "patience": 5}, 30),  # before it fires
        ("noise", {"sigma": 20, "patience": 30, "sync_every": 4}, 62),  # after, mid-batch
        ("oracle", {}, 30),
        ("none", {}, 30),
    ],
)
def test_judge_state_survives_torch_save_and_gives_the_same_later_decisions(rng, name, options, cut):
    if name in ("wmv", "emv"):
        iterates = approach_then_diverge(turn=40, count=150, rng=rng)
    else:
        noisy, iterates = towards_noisy()
        options = {**options, "noisy": noisy} if name == "noise" else options
        options = {"clean": noisy} if name == "oracle" else options

    def feed(judge, start, stop):
        """update() answers until the judge says stop; numpy and (C, H, W) tensors by turns."""
        said = []
        for t in range(start, stop):
            x = iterates[t]
            said.append(judge.update(t, x if t % 3 else torch.from_numpy(x).permute(2, 0, 1).float()))
            if said[-1]:
                break
        return said

    whole = make_judge(name, **options)
    stops = feed(whole, 0, len(iterates))
    assert cut < len(stops) - 1, "the cut must come before the stop"

    first = make_judge(name, **options)
    before = feed(first, 0, cut)
    state = saved_and_loaded(first.state())
    resumed = make_judge(name, **options)
    resumed.load_state(state, torch.device("cpu"))
    after = feed(resumed, cut, len(iterates))
    assert before + after == stops
    assert resumed.choice() == whole.choice() and resumed.scores == whole.scores
    if hasattr(whole, "chosen_image"):
        expected, got = whole.chosen_image(), resumed.chosen_image()
        assert (got is None and expected is None) or np.array_equal(got, expected)


def test_load_state_refuses_another_judges_or_other_options_or_a_damaged_state(rng):
    judge = WMVJudge(window=3, patience=5)
    for t, x in enumerate(approach_then_diverge(turn=5, count=8, rng=rng)):
        judge.update(t, x)
    state = saved_and_loaded(judge.state())
    cpu = torch.device("cpu")
    with pytest.raises(BdnError, match=r"judge wmv: the saved state was made with window 3, patience 5, this judge "):
        WMVJudge(window=4, patience=5).load_state(state, cpu)
    with pytest.raises(BdnError, match="judge emv: the saved state is not this judge's .it names judge 'wmv'"):
        EMVJudge().load_state(state, cpu)
    del state["frames"]
    with pytest.raises(BdnError, match="judge wmv: the saved state is damaged .KeyError: 'frames'"):
        WMVJudge(window=3, patience=5).load_state(state, cpu)
