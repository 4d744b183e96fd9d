"""Tables and figures: the ground floor that knows nothing of models.

Every file is written atomically, so an interrupted run never leaves a half-written table or figure behind.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from bdn.io import atomic_write_bytes, atomic_write_text


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".2f") -> str:
    return frame.to_markdown(index=False, floatfmt=floatfmt)


def write_table(frame: pd.DataFrame, stem: Path, floatfmt: str = ".2f") -> tuple[Path, Path]:
    """Write `stem.csv` and `stem.md` (the same table, for machines and for people)."""
    stem = Path(stem)
    csv_path = atomic_write_text(stem.with_suffix(".csv"), frame.to_csv(index=False))
    md_path = atomic_write_text(stem.with_suffix(".md"), markdown_table(frame, floatfmt) + "\n")
    return csv_path, md_path


def write_rows_csv(path: Path, rows: Sequence[dict]) -> Path:
    """A list of same-keyed dicts (a training log) as CSV, atomically."""
    return atomic_write_text(path, pd.DataFrame(list(rows)).to_csv(index=False))


def write_training_log(directory: Path, rows: Sequence[dict], plot: Callable[[Path, Sequence[dict]], None]) -> None:
    """A trainer's `log.csv` and its `curves.png` (drawn by `plot`), rewritten after every epoch."""
    write_rows_csv(directory / "log.csv", rows)
    plot(directory / "curves.png", rows)


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float] | None = None, **options):
    """(figure, axes) as pyplot.subplots gives them, without pyplot: no backend is chosen and no global list of
    figures is kept, so drawing files never touches process-wide state (servers and CI have no display)."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(nrows, ncols, **options)


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())


def comparison_figure(rows: Sequence[Sequence[tuple[str, np.ndarray]]], path: Path, panel_inches: float = 3.0) -> Path:
    """A grid of titled images: one row per test image, one column per panel (noisy | methods... | clean)."""
    n_rows = len(rows)
    n_cols = max(len(row) for row in rows)
    # Each panel gets room for a two-line title above it, so rows never overlap.
    figure, axes = new_figure(
        n_rows, n_cols, figsize=(panel_inches * n_cols, (panel_inches + 0.6) * n_rows), squeeze=False
    )
    for axes_row, row in zip(axes, rows, strict=True):
        for axis in axes_row:
            axis.axis("off")
        for axis, (title, image) in zip(axes_row, row, strict=False):
            shown = np.clip(image, 0, 1)
            axis.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            axis.set_title(title, fontsize=9)
    figure.tight_layout(h_pad=1.0)
    return save_figure(figure, path)


def grouped_bar_figure(
    frame: pd.DataFrame, group: str, bar: str, value: str, path: Path, ylabel: str, title: str = ""
) -> Path:
    """One cluster of bars per `group` value, one bar per `bar` value (e.g. PSNR per dataset, per method)."""
    table = frame.pivot_table(index=group, columns=bar, values=value, sort=False)
    figure, axis = new_figure(figsize=(max(6.0, 1.2 * len(table.index) * max(1, len(table.columns)) / 3), 4))
    table.plot.bar(ax=axis, rot=0, width=0.8)
    axis.set_ylabel(ylabel)
    axis.set_xlabel("")
    if title:
        axis.set_title(title)
    finite = table.to_numpy()[np.isfinite(table.to_numpy())]
    if finite.size:
        axis.set_ylim(max(0.0, finite.min() - 3), finite.max() + 1)
    axis.legend(fontsize=8, ncols=min(4, len(table.columns)))
    axis.grid(axis="y", alpha=0.3)
    return save_figure(figure, path)


def dip_curves_figure(
    history: Sequence[dict],
    path: Path,
    name: str,
    peak: int | None,
    chosen: int | None,
    best: int | None = None,
    chosen_label: str = "chosen",
) -> Path:
    """A DIP fit's curves (fit_dip's history rows): PSNR of the raw and EMA outputs against the clean image, with
    the peak, the judge's choice and the best snapshot marked, beside the loss; the loss alone without a clean
    image."""
    iterations = [row["iteration"] for row in history]
    has_psnr = any(row["psnr"] is not None for row in history)
    figure, axes = new_figure(1, 2 if has_psnr else 1, figsize=(11 if has_psnr else 5.5, 3.8), squeeze=False)
    if has_psnr:
        axis = axes[0, 0]
        axis.plot(iterations, [row["psnr_raw"] for row in history], lw=0.6, alpha=0.6, label="raw output")
        axis.plot(iterations, [row["psnr"] for row in history], lw=1.2, label="EMA output")
        if peak is not None:
            axis.axvline(peak, color="green", ls="--", lw=0.8, label=f"peak ({peak})")
        if chosen is not None:
            axis.axvline(chosen, color="red", ls=":", lw=0.8, label=f"{chosen_label} ({chosen})")
        if best is not None:
            value = next((row["psnr"] for row in history if row["iteration"] == best), None)
            if value is not None:
                axis.plot([best], [value], "o", color="green", ms=5, label=f"best snapshot ({best})")
        axis.set_xlabel("iteration")
        axis.set_ylabel("PSNR against clean (dB)")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    axis = axes[0, -1]
    axis.semilogy(iterations, [max(row["loss"], 1e-12) for row in history], lw=0.8)
    axis.set_xlabel("iteration")
    axis.set_ylabel("loss (MSE to the reference)")
    axis.grid(alpha=0.3)
    figure.suptitle(name)
    figure.tight_layout()
    return save_figure(figure, path)
