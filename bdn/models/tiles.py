"""Large images through overlapping tiles, so memory stays bounded by the tile, not the image.

Each tile is cut with `overlap` pixels of context on every side (where the image has them) and only its core is
kept, so a model whose receptive field reaches less than `overlap` pixels gives, away from the image borders,
exactly what it gives on the whole image. Tile origins move in steps that are multiples of `align` (2^(levels-1)
for a pyramid model), so every tile sees the pyramid's sampling grid where the whole image does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def tiled(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int = 512, overlap: int = 48, align: int = 1
) -> torch.Tensor:
    """fn over `x` ([N, C, H, W]) tile by tile; fn must keep the spatial size. One call when x fits one tile."""
    height, width = x.shape[-2:]
    if height <= tile and width <= tile:
        return fn(x)
    overlap = -(-overlap // align) * align  # context a multiple of the grid too
    step = (tile - 2 * overlap) // align * align
    if step < align:
        raise ValueError(f"tile {tile} leaves no core with overlap {overlap} (aligned to {align})")
    out: torch.Tensor | None = None
    for top in range(0, height, step):
        for left in range(0, width, step):
            y0, x0 = max(top - overlap, 0), max(left - overlap, 0)
            y1, x1 = min(top + step + overlap, height), min(left + step + overlap, width)
            result = fn(x[..., y0:y1, x0:x1])
            if out is None:
                out = result.new_empty(*result.shape[:-2], height, width)
            core_h, core_w = min(step, height - top), min(step, width - left)
            out[..., top : top + core_h, left : left + core_w] = result[
                ..., top - y0 : top - y0 + core_h, left - x0 : left - x0 + core_w
            ]
    return out
