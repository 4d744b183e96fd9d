"""bdn's default DIP (what `bdn denoise --method dip` runs) against the seed's setup, on issue 3's CC images.

For each image: the default fit as users get it (`bdn.dip.denoise.prepare`: its generator, its learned
initialisation, its judge), timed to the judge's choice, with the clean image beside it for the figures only:
the chosen image's PSNR, and the oracle peak of the EMA output over the iterations run. With `--past-stop N` the
fit goes on to iteration N after the judge has chosen (the choice frozen), so the oracle peak is also looked
for after the stop. Each image runs in a fresh process with `--threads` threads, so its peak memory is its own.
The seed's columns come from benchmarks/records/dip_seed_peaks_h100.csv (iterations to its peak) times its
seconds per iteration measured here in the same run (`--seed-timing`), or given with `--seed-sec-per-iter`.

    python benchmarks/dip_default.py --threads 2 --out results/dip_default

Writes <out>/<image>.json (one per image; an existing one is kept: the run resumes), <out>/curves.csv and
<out>/summary.csv/.md. A fit in progress saves its state every `--checkpoint-every` iterations to
<out>/<image>.state.pt (weights, Adam, the judge, the clock), so a killed run goes on where it was; on the CPU the
resumed fit is the uninterrupted one, and its seconds are the sum of its sessions'.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from dip_seed_curves import CROP_IMAGES, FULL_IMAGES, cases  # noqa: E402

RECORD = Path(__file__).parent / "records" / "dip_seed_peaks_h100.csv"


class _FrozenAfterStop:
    """Wraps a judge: feeds it until it says stop, then keeps its choice and lets the fit run on."""

    def __init__(self, judge) -> None:
        self.judge, self.name, self.source = judge, judge.name, judge.source
        self.stop_iteration: int | None = None

    def update(self, iteration: int, image) -> bool:
        if self.stop_iteration is None and self.judge.update(iteration, image):
            self.stop_iteration = iteration
        return False

    @property
    def latest_choice(self) -> int | None:
        return None if self.stop_iteration is not None else self.judge.latest_choice

    def choice(self) -> int:
        return self.judge.choice()

    def state(self) -> dict:
        return {"judge": self.judge.state(), "stop_iteration": self.stop_iteration}

    def load_state(self, state: dict, device) -> None:
        self.judge.load_state(state["judge"], device)
        self.stop_iteration = state["stop_iteration"]

    def chosen_image(self):
        return self.judge.chosen_image()


def run_one(
    name: str,
    threads: int,
    past_stop: int | None,
    iterations: int | None,
    out: Path,
    init: str | None = None,
    checkpoint_every: int = 50,
    device: str = "cpu",
    also: tuple[str, ...] = (),
) -> dict:
    import torch

    from bdn.bench import peak_rss_mb
    from bdn.devices import pick_device
    from bdn.dip.denoise import prepare
    from bdn.dip.fit import fit_dip
    from bdn.dip.judges import TUNED_WMV, make_judge
    from bdn.metrics import psnr
    from bdn.tensorfile import write_checkpoint

    torch.set_num_threads(threads)
    device = pick_device(device, what="--device")
    noisy, clean = next((noisy, clean) for case, noisy, clean in cases(CROP_IMAGES, FULL_IMAGES) if case == name)
    options = {"init": init} if init else {}
    job = prepare(noisy, iterations=max(iterations, past_stop or 0) if iterations else None, **options)
    judge = _FrozenAfterStop(job.judge) if past_stop and job.judge is not None else job.judge
    # Other judges watch the same fit from the side (fed the same outputs, never stopping it): each one's stop and
    # choice, and the seconds the fit had taken at its stop, come from this one run.
    settings = {"wmv": TUNED_WMV, "noise": {"noisy": job.padded}}
    watchers = {other: _FrozenAfterStop(make_judge(other, **settings.get(other, {}))) for other in also}
    checkpoint = out / f"{name}.state.pt"
    resume, stamps, before = None, {}, 0.0
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        resume, stamps = saved["fit"], {int(i): float(s) for i, s in saved["stamps"].tolist()}
        if judge is not None:
            judge.load_state(saved["judge"], device)
        for other, watcher in watchers.items():
            watcher.load_state(saved["watchers"][other], device)
        before = max(stamps.values(), default=0.0)
        print(f"{name}: resuming after iteration {resume['iteration']}", flush=True)
    start = time.perf_counter()

    def stamp(iteration: int, frame) -> None:
        for watcher in watchers.values():
            watcher.update(iteration, (frame.raw_tensor if watcher.source == "raw" else frame.ema_tensor)[0])
        stamps[iteration] = before + time.perf_counter() - start
        if checkpoint_every and iteration % checkpoint_every == 0:
            table = torch.tensor(sorted(stamps.items()), dtype=torch.float64)
            state = {"fit": frame.state(), "judge": judge.state() if judge is not None else {}, "stamps": table}
            state["watchers"] = {other: watcher.state() for other, watcher in watchers.items()}
            write_checkpoint(checkpoint, state)

    result = fit_dip(
        job.padded,
        clean,
        job.config,
        device=device,
        init_state=job.init_state,
        resume_state=resume,
        judge=judge,
        on_iteration=stamp,
        progress=False,
    )
    stop = judge.stop_iteration if isinstance(judge, _FrozenAfterStop) else result.iterations
    stop = stop or result.iterations
    chosen = result.judge_image if result.judge_image is not None else result.ema
    curve = pd.DataFrame(result.history)[["iteration", "psnr"]].assign(image=name)
    curve.to_csv(out / f"{name}.curve.csv", index=False)
    upto = curve[curve.iteration <= stop]
    row = {
        "image": name,
        "noisy_psnr": psnr(clean, noisy),
        "chosen_iteration": result.judge_iteration,
        "chosen_psnr": psnr(clean, job.crop(chosen)),
        "stop_iteration": stop,
        "seconds_to_choice": stamps[stop],
        "peak_psnr_to_stop": float(upto.psnr.max()),
        "peak_psnr": result.peak_psnr,
        "peak_iteration": result.peak_iteration,
        "iterations_run": result.iterations,
        "sec_per_iter": result.seconds_per_iteration,
        "peak_mb": peak_rss_mb(),
        "config": repr(job.config),
    }
    psnr_at = dict(zip(curve.iteration, curve.psnr, strict=True))  # the EMA output's PSNR, as the fit measured it
    for other, watcher in watchers.items():
        watched_stop = watcher.stop_iteration or result.iterations
        row[f"{other}_chosen_iteration"] = watcher.choice()
        row[f"{other}_chosen_psnr"] = psnr_at[watcher.choice()]
        row[f"{other}_stop_iteration"] = watched_stop
        row[f"{other}_seconds_to_choice"] = stamps[watched_stop]
    checkpoint.unlink(missing_ok=True)
    return row


def seed_timing(threads: int, out: Path) -> list[float]:
    """The seed setup's seconds per iteration here at 256 and 512 pixels (fp32, NCHW), timed by dip_speed.py in
    fresh processes; kept in <out>/seed_timing.json so that a resumed run compares with the same figures."""
    saved = out / "seed_timing.json"
    if saved.exists():
        return json.loads(saved.read_text())["sec_per_iter"]
    speed = Path(__file__).parent / "dip_speed.py"
    rows = []
    for size in (256, 512):
        command = [sys.executable, str(speed), "--worker", f"skip:{size}:fp32:nchw", "--threads", str(threads)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    saved.write_text(json.dumps({"sec_per_iter": [row["sec_per_iter"] for row in rows], "rows": rows}, indent=1))
    return [row["sec_per_iter"] for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", nargs="*", help="case names (default: the five crops and the full image)")
    parser.add_argument("--iterations", type=int, help="the most iterations (default: as dip() chooses)")
    parser.add_argument("--past-stop", type=int, help="run on to this iteration after the judge's choice")
    parser.add_argument(
        "--seed-sec-per-iter",
        type=float,
        nargs=2,
        metavar=("S256", "S512"),
        help="the seed's seconds per iteration here at 256 and 512 (from dip_speed.py)",
    )
    parser.add_argument(
        "--default-sec-per-iter",
        type=float,
        nargs=2,
        metavar=("S256", "S512"),
        help="the default's seconds per iteration here, timed alone (dip_speed.py --cases default:256 default:512)",
    )
    parser.add_argument(
        "--seed-timing",
        action="store_true",
        help="time the seed's setup here first (dip_speed.py, fp32 in PyTorch's default layout, as the seed ran it) "
        "and use it as --seed-sec-per-iter",
    )
    parser.add_argument("--init", help="measure dip(init=...) instead of the default (e.g. polyu_masked)")
    parser.add_argument(
        "--also-judges",
        nargs="*",
        default=[],
        choices=("wmv", "noise"),
        help="judges that watch the same fits from the side (wmv: bdn's tuned setting), each measured alone",
    )
    parser.add_argument("--checkpoint-every", type=int, default=50, help="iterations between saved states (0: none)")
    parser.add_argument("--device", default="cpu", help="cpu (the figures), cuda for iteration counts on a GPU")
    parser.add_argument("--out", type=Path, default=Path("results/dip_default"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.worker:
        row = run_one(
            args.worker,
            args.threads,
            args.past_stop,
            args.iterations,
            args.out,
            args.init,
            args.checkpoint_every,
            args.device,
            tuple(args.also_judges),
        )
        (args.out / f"{args.worker}.json").write_text(json.dumps(row, indent=1))
        return
    names = args.images or [f"{n}_c256" for n in CROP_IMAGES] + [f"{n}_full" for n in FULL_IMAGES]
    if args.seed_timing:
        args.seed_sec_per_iter = seed_timing(args.threads, args.out)
    for name in names:
        if (args.out / f"{name}.json").exists():
            continue
        command = [sys.executable, __file__, "--worker", name, "--threads", str(args.threads), "--out", str(args.out)]
        if args.iterations:
            command += ["--iterations", str(args.iterations)]
        if args.init:
            command += ["--init", args.init]
        if args.past_stop:
            command += ["--past-stop", str(args.past_stop)]
        command += ["--checkpoint-every", str(args.checkpoint_every), "--device", args.device]
        if args.also_judges:
            command += ["--also-judges", *args.also_judges]
        subprocess.run(command, check=True)
        print(json.loads((args.out / f"{name}.json").read_text()), flush=True)
    rows = pd.DataFrame([json.loads((args.out / f"{n}.json").read_text()) for n in names])
    seed = pd.read_csv(RECORD).query("net_type == 'skip'").set_index("image")
    rows["seed_peak_psnr"] = rows.image.map(seed.peak_psnr)
    rows["seed_peak_iteration"] = rows.image.map(seed.peak_iteration)

    def per_iter(given: list[float]) -> pd.Series:
        return rows.image.map(lambda n: given[1 if n.endswith("_full") else 0])

    # Where the fits ran several to a machine, their own seconds are not speed figures: the time to the choice is
    # then its iterations x the default's seconds per iteration measured alone (dip_speed.py --cases default:256).
    seconds = rows.seconds_to_choice
    if args.default_sec_per_iter:
        rows["time_to_choice_s"] = rows.stop_iteration * per_iter(args.default_sec_per_iter)
        seconds = rows.time_to_choice_s
    if args.seed_sec_per_iter:
        rows["seed_time_to_peak_s"] = rows.seed_peak_iteration * per_iter(args.seed_sec_per_iter)
        rows["speedup"] = rows.seed_time_to_peak_s / seconds
        for other in args.also_judges:
            rows[f"{other}_speedup"] = rows.seed_time_to_peak_s / rows[f"{other}_seconds_to_choice"]
    rows["chosen_minus_seed_peak"] = rows.chosen_psnr - rows.seed_peak_psnr
    for other in args.also_judges:
        rows[f"{other}_chosen_minus_seed_peak"] = rows[f"{other}_chosen_psnr"] - rows.seed_peak_psnr
        rows[f"{other}_gap_to_own_peak"] = rows.peak_psnr - rows[f"{other}_chosen_psnr"]
    rows["peak_minus_seed_peak"] = rows.peak_psnr - rows.seed_peak_psnr
    table = rows.drop(columns=["config"])
    table.to_csv(args.out / "summary.csv", index=False)
    text = table.to_markdown(index=False, floatfmt=".2f")
    crops = table[~table.image.str.endswith("_full")]
    means = crops.drop(columns=["image"]).mean(numeric_only=True)
    text += "\n\nMean over the crops: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()) + "\n"
    text += f"\nConfig: {rows.config.iloc[0]}\n"
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
