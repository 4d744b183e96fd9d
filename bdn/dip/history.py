"""What the DIP loop records: the per-iteration figures (the history), the oracle's best snapshot, the peak.

Every iteration the loop writes its figures into a small device tensor (`FIGURES`: loss, PSNR of the EMA and of
the raw output against the clean image, PSNR of the raw output against the noisy image, whether the fall-back
fired) without waiting for the host. `Recorder` copies that row into a block on the device and brings the block
to the host in one sync once it is full (every `show_iter` iterations) or when someone asks (`flush`). SSIM is
dearer, so the loop computes it only at snapshots and hands it over with the row.

A history row is a dict with `HISTORY_FIELDS`; figures that need the clean image are None without it, and
psnr_noisy is None when the fall-back is off. For a checkpoint the history travels as one float64 tensor
(`Recorder.table`), which holds float32 figures exactly.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FIGURES", "HISTORY_FIELDS", "BestSnapshot", "Recorder", "peak"]

HISTORY_FIELDS = ("iteration", "loss", "psnr", "ssim", "psnr_raw", "psnr_noisy", "fallback", "snapshot")
FIGURES = ("loss", "psnr", "psnr_raw", "psnr_noisy", "fallback")  # the loop's per-iteration device row


class Recorder:
    """Per-iteration figures kept on the device, brought to the host a block of `rows` iterations at a time.

    `has_clean`: a clean image was given (psnr, ssim, psnr_raw are figures, else None); `checks`: the fall-back
    is on (psnr_noisy is a figure, else None).
    """

    def __init__(self, rows: int, device: torch.device, has_clean: bool, checks: bool) -> None:
        self.buffer = torch.zeros((rows, len(FIGURES)), device=device)
        self.iterations: list[int] = []  # the iterations waiting in `buffer`
        self.ssim: dict[int, torch.Tensor] = {}  # their SSIMs (snapshots only), still on the device
        self.has_clean, self.checks = has_clean, checks
        self.history: list[dict] = []
        self.snapshots: set[int] = set()

    def add(self, iteration: int, figures: torch.Tensor, snapshot: bool, ssim: torch.Tensor | None = None) -> None:
        """Record `iteration`: its `figures` row (copied, the loop reuses it), whether it is a snapshot, its SSIM."""
        if snapshot:
            self.snapshots.add(iteration)
        if ssim is not None:
            self.ssim[iteration] = ssim
        self.buffer[len(self.iterations)].copy_(figures)
        self.iterations.append(iteration)
        if len(self.iterations) == self.buffer.shape[0]:
            self.flush()

    def flush(self) -> None:
        """Bring the pending figures to the host as history rows."""
        if not self.iterations:
            return
        rows = self.buffer[: len(self.iterations)].tolist()  # the one host sync of the block
        ssims = dict(zip(self.ssim, torch.stack(list(self.ssim.values())).tolist(), strict=True)) if self.ssim else {}
        for iteration, (loss, p_ema, p_raw, p_noisy, fell) in zip(self.iterations, rows, strict=True):
            self.history.append(
                {
                    "iteration": iteration,
                    "loss": loss,
                    "psnr": p_ema if self.has_clean else None,
                    "ssim": ssims.get(iteration),
                    "psnr_raw": p_raw if self.has_clean else None,
                    "psnr_noisy": p_noisy if self.checks else None,
                    "fallback": bool(fell),
                    "snapshot": iteration in self.snapshots,
                }
            )
        self.iterations, self.ssim = [], {}

    def table(self) -> torch.Tensor:
        """The history so far as one float64 tensor (N, 8) in `HISTORY_FIELDS` order, None as NaN."""
        self.flush()
        rows = [
            [math.nan if row[name] is None else float(row[name]) for name in HISTORY_FIELDS] for row in self.history
        ]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), len(HISTORY_FIELDS))

    def load_table(self, table: torch.Tensor) -> None:
        """Take `table` (from `table()`) as the history so far; the Nones come back by the rules `flush` follows."""
        rows = []
        for values in table.tolist():
            row = dict(zip(HISTORY_FIELDS, values, strict=True))
            snapshot = bool(row["snapshot"])
            rows.append(
                {
                    "iteration": int(row["iteration"]),
                    "loss": row["loss"],
                    "psnr": row["psnr"] if self.has_clean else None,
                    "ssim": row["ssim"] if self.has_clean and snapshot else None,
                    "psnr_raw": row["psnr_raw"] if self.has_clean else None,
                    "psnr_noisy": row["psnr_noisy"] if self.checks else None,
                    "fallback": bool(row["fallback"]),
                    "snapshot": snapshot,
                }
            )
        self.history = rows
        self.snapshots = {row["iteration"] for row in rows if row["snapshot"]}


class BestSnapshot:
    """The oracle: the snapshot whose EMA output has the best PSNR against the clean image, tracked on the device.

    `image` is None when there is no clean image to score against; `psnr` and `iteration` exist regardless (a
    checkpoint always carries them).
    """

    def __init__(self, like: torch.Tensor, has_clean: bool) -> None:
        self.psnr = torch.full((), -math.inf, device=like.device)
        self.iteration = torch.zeros((), dtype=torch.long, device=like.device)
        self.image = torch.zeros_like(like) if has_clean else None

    def offer(self, iteration: int, psnr: torch.Tensor, image: torch.Tensor) -> None:
        """Keep `image` (a snapshot's EMA output) if its `psnr` beats the best so far; no host sync."""
        better = psnr > self.psnr
        torch.where(better, psnr, self.psnr, out=self.psnr)
        self.iteration.masked_fill_(better, iteration)
        torch.where(better, image, self.image, out=self.image)


def peak(history: list[dict]) -> tuple[int, float] | tuple[None, None]:
    """The iteration with the best EMA PSNR over the whole history, and that PSNR (the seed's max_index).

    (None, None) when no row has a PSNR. The first of equal values wins, as `max` keeps it.
    """
    scored = [row for row in history if row["psnr"] is not None and not math.isnan(row["psnr"])]
    if not scored:
        return None, None
    best = max(scored, key=lambda row: row["psnr"])
    return best["iteration"], best["psnr"]
