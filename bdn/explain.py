"""What a denoiser does at a pixel: its adaptive filter (a row of the Jacobian) and how far that filter reaches.

A bias-free network is positively homogeneous, f(a y) = a f(y) for a > 0, so by Euler's theorem f(y) = J(y) y
wherever it is differentiable: each output pixel is a weighted sum of the input pixels, with weights (the row of
the Jacobian J(y) for that pixel) that adapt to the image (Mohan et al., ICLR 2020). This module computes those rows
by autograd, measures their spread (the effective receptive field), checks f(y) = J y numerically (it fails for a
model with biases, by the size of their contribution), and draws the filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bdn.errors import BdnError

CHANNEL_NAMES = {1: ("grey",), 3: ("R", "G", "B")}


def _raw_net(net):
    """The network itself: an ImageDenoiser clamps its output to [0, 1], which is not linear, so unwrap it."""
    from bdn.models.wrap import ImageDenoiser

    return net.net if isinstance(net, ImageDenoiser) else net


def _as_chw(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) -> (C, H, W), checking the layout the rest of bdn uses."""
    array = np.asarray(image)
    if array.ndim == 2:
        return array[None]
    if array.ndim == 3 and array.shape[2] == 3:
        return np.moveaxis(array, 2, 0)
    raise BdnError(f"explain: image must be (H, W) grey or (H, W, 3) colour, got shape {array.shape}")


def _checked_pixels(pixels: Sequence[tuple[int, int]], height: int, width: int) -> list[tuple[int, int]]:
    """The pixels as (row, col) ints, each inside the image (negative indices are refused, not wrapped)."""
    if len(pixels) == 0:
        raise BdnError("explain: give at least one pixel (row, col)")
    checked = []
    for pixel in pixels:
        try:
            row, col = (int(v) for v in pixel)
        except (TypeError, ValueError):
            raise BdnError(f"explain: a pixel is (row, col), got {pixel!r}") from None
        if not (0 <= row < height and 0 <= col < width):
            raise BdnError(
                f"pixel ({row}, {col}) is outside the {height}x{width} image (rows 0-{height - 1}, cols 0-{width - 1})"
            )
        checked.append((row, col))
    return checked


def _prepared(net, image: np.ndarray, device: str):
    """(raw net on `device`, in its parameter dtype, and the image as a [1, C, H, W] tensor of that dtype)."""
    import torch

    from bdn.tensors import to_nchw

    net = _raw_net(net).to(device)
    param = next(iter(net.parameters()), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    chw = _as_chw(image)
    expected = getattr(net, "channels", None)
    if expected is not None and expected != chw.shape[0]:
        raise BdnError(f"explain: the model takes {expected}-channel images, the image has {chw.shape[0]}")
    return net, to_nchw(image, dtype, device)


def net_output(net, image: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The raw network's output (eval mode, not clamped), in the image's own layout: what J y is compared with."""
    import torch

    net, x = _prepared(net, image, device)
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(x)[0].cpu().numpy()
    finally:
        net.train(was_training)
    return out[0] if out.shape[0] == 1 else np.moveaxis(out, 0, 2)


def adaptive_filters(net, image: np.ndarray, pixels: Sequence[tuple[int, int]], device: str = "cpu") -> np.ndarray:
    """The Jacobian rows of `net` at `image` for each output pixel: shape (P, C_out, C_in, H, W).

    `net` takes float [1, C, H, W] and returns that shape (an ImageDenoiser is unwrapped to its `.net`); it runs
    in eval mode, in its own parameter dtype (call `net.double()` first for float64 precision), and is left in
    the training mode it came in (it is moved to `device`). `image` is float (H, W) or (H, W, 3) in [0, 1];
    `pixels` are (row, col) inside it. One forward pass, then one backward pass per pixel and output channel:
    filters[p, c] is d f(y)[c, row_p, col_p] / d y.
    """
    import torch

    chw = _as_chw(image)
    checked = _checked_pixels(pixels, chw.shape[1], chw.shape[2])
    net, x = _prepared(net, image, device)
    was_training = net.training
    net.eval()
    try:
        x = x.clone().requires_grad_(True)
        with torch.enable_grad():
            out = net(x)
            if out.shape[-2:] != x.shape[-2:]:
                raise BdnError(f"explain: the model's output {tuple(out.shape)} does not match its input's size")
            rows = []
            last = len(checked) * out.shape[1] - 1
            for p, (row, col) in enumerate(checked):
                per_channel = []
                for c in range(out.shape[1]):
                    # Keep the graph for the next pixel/channel; the last backward may free it.
                    keep = p * out.shape[1] + c < last
                    (grad,) = torch.autograd.grad(out[0, c, row, col], x, retain_graph=keep)
                    per_channel.append(grad[0].detach().cpu().numpy())
                rows.append(np.stack(per_channel))
    finally:
        net.train(was_training)
    return np.stack(rows)


def effective_receptive_field(
    filters: np.ndarray, pixels: Sequence[tuple[int, int]], fraction: float = 0.9
) -> list[dict]:
    """How far each filter reaches: one dict per pixel, with a list per output channel under each key.

    Keys: `row`, `col`; `radius`, the smallest Euclidean radius around the pixel whose disc holds `fraction` of
    the filter's total absolute weight (summed over input channels); `count`, the fewest input pixels (largest
    weights first) that hold that fraction, a measure free of the disc's shape; `sum`, the filter's plain sum
    over all input pixels and channels (near 1 in flat regions: a bias-free denoiser keeps the local mean).

    Absolute, not squared, weight: a pixel's share of the output is w_j y_j, so |w_j| is its influence on
    image content; squaring would shrink a wide tail of small weights that together still carry much of the
    average (squared weight is the share of the *noise variance* passed through, the other sensible choice).
    A zero filter gets radius 0 and count 0.
    """
    if not 0.0 < fraction <= 1.0:
        raise BdnError(f"explain: fraction must be in (0, 1], got {fraction}")
    filters = np.asarray(filters)
    if filters.ndim != 5:
        raise BdnError(f"explain: filters must be (P, C_out, C_in, H, W), got shape {filters.shape}")
    height, width = filters.shape[-2:]
    checked = _checked_pixels(pixels, height, width)
    if len(checked) != filters.shape[0]:
        raise BdnError(f"explain: {filters.shape[0]} filters but {len(checked)} pixels")
    rows, cols = np.mgrid[0:height, 0:width]
    results = []
    for (row, col), per_pixel in zip(checked, filters, strict=True):
        distance = np.hypot(rows - row, cols - col).ravel()
        order = np.argsort(distance, kind="stable")
        radii, counts, sums = [], [], []
        for channel_filter in per_pixel:
            weight = np.abs(channel_filter).sum(axis=0).ravel().astype(np.float64)
            total = weight.sum()
            sums.append(float(channel_filter.sum(dtype=np.float64)))
            if total <= 0.0:
                radii.append(0.0)
                counts.append(0)
                continue
            target = fraction * total * (1.0 - 1e-12)  # rounding must not push fraction=1 past the total
            by_distance = np.cumsum(weight[order])
            radii.append(float(distance[order][np.searchsorted(by_distance, target)]))
            by_size = np.cumsum(np.sort(weight)[::-1])
            counts.append(int(np.searchsorted(by_size, target)) + 1)
        results.append({"row": row, "col": col, "radius": radii, "count": counts, "sum": sums})
    return results


def check_reconstruction(
    filters: np.ndarray, image: np.ndarray, output: np.ndarray, pixels: Sequence[tuple[int, int]]
) -> np.ndarray:
    """|filter . input - output| at each pixel and output channel: shape (P, C_out); take `.max()` for one number.

    `output` is the raw network output (`net_output`, not clamped) in the image's layout. For a bias-free
    network this is rounding error (below 1e-4); for a biased one it is what the biases add.
    """
    x = _as_chw(image).astype(np.float64)
    out = _as_chw(output).astype(np.float64)
    checked = _checked_pixels(pixels, x.shape[1], x.shape[2])
    filters = np.asarray(filters, dtype=np.float64)
    if filters.shape[0] != len(checked) or filters.shape[2:] != x.shape:
        raise BdnError(f"explain: filters of shape {filters.shape} do not fit {len(checked)} pixels of {x.shape}")
    errors = np.empty(filters.shape[:2])
    for p, (row, col) in enumerate(checked):
        predicted = np.einsum("cihw,ihw->c", filters[p], x)
        errors[p] = np.abs(predicted - out[:, row, col])
    return errors


def summary_rows(
    filters: np.ndarray, pixels: Sequence[tuple[int, int]], erf: list[dict], errors: np.ndarray | None = None
) -> list[dict]:
    """One record per pixel and output channel: row, col, channel, filter_sum, erf_radius, erf_pixels, and
    reconstruction_error (NaN where not given)."""
    names = CHANNEL_NAMES.get(filters.shape[1], tuple(str(c) for c in range(filters.shape[1])))
    records = []
    for p, info in enumerate(erf):
        for c, name in enumerate(names):
            records.append(
                {
                    "row": info["row"],
                    "col": info["col"],
                    "channel": name,
                    "filter_sum": info["sum"][c],
                    "erf_radius": info["radius"][c],
                    "erf_pixels": info["count"][c],
                    "reconstruction_error": float(errors[p, c]) if errors is not None else float("nan"),
                }
            )
    return records


def _window(row: int, col: int, half: int, height: int, width: int) -> tuple[slice, slice]:
    return slice(max(0, row - half), min(height, row + half + 1)), slice(max(0, col - half), min(width, col + half + 1))


def write_explanation(
    out_dir: str | Path,
    image: np.ndarray,
    filters: np.ndarray,
    pixels: Sequence[tuple[int, int]],
    erf: list[dict],
    *,
    errors: np.ndarray | None = None,
    title: str = "",
) -> list[Path]:
    """Write `filters.png` (the image with the pixels marked, and each pixel's filter around it) and
    `filters.csv` (summary_rows); returns their paths. Both written atomically.

    A filter is shown summed over input channels, one panel per output channel, cropped to a window of about
    twice its ERF radius around the pixel, on a diverging colour map centred at 0 (red positive, blue negative),
    scaled to the largest weight off the pixel itself: the centre weight (near 1 for a residual net at a
    flat spot) would otherwise take the whole scale and hide the rest of the filter, so it may saturate.
    `errors` (check_reconstruction) fills the CSV's reconstruction_error column.
    """
    import io

    import pandas as pd
    from matplotlib.figure import Figure  # not pyplot: no backend or global figure state is touched

    from bdn.io import atomic_write_bytes, atomic_write_text

    out_dir = Path(out_dir)
    filters = np.asarray(filters)
    n_pixels, n_out = filters.shape[:2]
    height, width = filters.shape[-2:]
    names = CHANNEL_NAMES.get(n_out, tuple(str(c) for c in range(n_out)))

    panel = 2.4
    figure = Figure(figsize=(panel * (2 + n_pixels), panel * max(2, n_out) + 0.6))
    grid = figure.add_gridspec(n_out, 2 + n_pixels)
    shown = figure.add_subplot(grid[:, :2])
    picture = np.clip(image, 0.0, 1.0)
    shown.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    for number, info in enumerate(erf, start=1):
        shown.plot(info["col"], info["row"], marker="+", color="yellow", markersize=12, markeredgewidth=2)
        shown.annotate(
            str(number), (info["col"], info["row"]), color="yellow", xytext=(4, 4), textcoords="offset points"
        )
    shown.set_title(title or "input (pixels marked)", fontsize=9)
    shown.axis("off")

    for p, info in enumerate(erf):
        half = int(min(max(8, np.ceil(2 * max(info["radius"])) + 2), max(height, width)))
        rows, cols = _window(info["row"], info["col"], half, height, width)
        for c in range(n_out):
            crop = filters[p, c].sum(axis=0)[rows, cols]
            around = np.abs(crop).copy()
            around[info["row"] - rows.start, info["col"] - cols.start] = 0.0
            limit = float(around.max()) or float(np.abs(crop).max()) or 1.0
            axis = figure.add_subplot(grid[c, 2 + p])
            extent = (cols.start - 0.5, cols.stop - 0.5, rows.stop - 0.5, rows.start - 0.5)
            axis.imshow(crop, cmap="RdBu_r", vmin=-limit, vmax=limit, extent=extent, interpolation="nearest")
            axis.plot(info["col"], info["row"], marker="o", markersize=9, markerfacecolor="none", color="black", lw=0)
            label = f"{p + 1}: ({info['row']}, {info['col']})" + (f" {names[c]}" if n_out > 1 else "")
            axis.set_title(f"{label}\nERF r={info['radius'][c]:.1f}, sum={info['sum'][c]:.2f}", fontsize=8)
            axis.set_xticks([])
            axis.set_yticks([])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    png = atomic_write_bytes(out_dir / "filters.png", buffer.getvalue())
    frame = pd.DataFrame(summary_rows(filters, pixels, erf, errors))
    csv = atomic_write_text(out_dir / "filters.csv", frame.to_csv(index=False))
    return [png, csv]


def explain(
    net,
    image: np.ndarray,
    pixels: Sequence[tuple[int, int]],
    out_dir: str | Path,
    *,
    fraction: float = 0.9,
    title: str = "",
    device: str = "cpu",
) -> tuple[list[dict], list[Path]]:
    """All of it for one image: filters, ERF, reconstruction check, figure and CSV; returns (summary_rows, paths)."""
    if not 0.0 < fraction <= 1.0:  # checked before the backward passes, not after
        raise BdnError(f"explain: fraction must be in (0, 1], got {fraction}")
    filters = adaptive_filters(net, image, pixels, device=device)
    errors = check_reconstruction(filters, image, net_output(net, image, device=device), pixels)
    erf = effective_receptive_field(filters, pixels, fraction=fraction)
    paths = write_explanation(out_dir, image, filters, pixels, erf, errors=errors, title=title)
    return summary_rows(filters, pixels, erf, errors), paths


def parse_pixel(text: str) -> tuple[int, int]:
    """'12,40' -> (12, 40): row, then column (the command line's --pixels)."""
    row, sep, col = text.partition(",")
    try:
        if sep:
            return int(row), int(col)
    except ValueError:
        pass
    raise BdnError(f"--pixels takes ROW,COL (whole numbers), got {text!r}")


def image_for_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """The image as the model's channel count wants it: colour to grey by luminance, grey repeated to RGB."""
    if channels not in (1, 3):
        raise BdnError(f"--channels must be 1 (grey) or 3 (colour), got {channels}")
    if channels == 1 and image.ndim == 3:
        from skimage.color import rgb2gray

        return rgb2gray(image).astype(np.float32)
    if channels == 3 and image.ndim == 2:
        return np.repeat(image[..., None], 3, axis=2)
    return image


__all__ = [
    "adaptive_filters",
    "explain",
    "image_for_channels",
    "parse_pixel",
    "check_reconstruction",
    "effective_receptive_field",
    "net_output",
    "summary_rows",
    "write_explanation",
]
