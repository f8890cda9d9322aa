"""Image grids: a batch of images [N, H, W] (grey) or [N, 3, H, W] (colour) with values in
[0, 1] tiled into one PNG; ``image_batch`` unflattens a datamodule's vectors into such a batch.

Images are laid out row by row, ``ncols`` to a row, separated by a one-pixel grey border, and
each is enlarged by pixel repetition to at least ``MIN_CELL_PIXELS`` on its longer side so
that 8x8 digits stay visible. Values outside [0, 1] are clipped; 0 is black, 1 is white.
With ``row_labels`` the rows are named in a white margin of ``LABEL_MARGIN`` pixels on the
left (the labels taken in turn, row by row: "input" above "recon"); the grid's pixels are the
same, shifted right by the margin.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.image import imsave
from numpy.typing import ArrayLike
from torch import Tensor

MIN_CELL_PIXELS = 32
BORDER_VALUE = 0.5
LABEL_MARGIN = 48
LABEL_DPI = 100


def image_batch(flat: Tensor, image_shape: Sequence[int]) -> np.ndarray:
    """Vectors [N, X] as images of ``image_shape``: [N, H, W] for (H, W) or (1, H, W), [N, C, H,
    W] for (C, H, W); a vector shape (X,) is one row of X pixels."""
    shape = tuple(image_shape)
    if len(shape) == 1:
        shape = (1, *shape)
    elif len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    return flat.detach().cpu().numpy().reshape(len(flat), *shape)


def tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """[N, H, W] (or [N, H, W, C]) -> one [rows (H + pad) + pad, ncols (W + pad) + pad] array
    (with C last), row by row."""
    n, h, w = images.shape[:3]
    nrows = math.ceil(n / ncols)
    grid = np.full(
        (nrows * (h + pad) + pad, ncols * (w + pad) + pad, *images.shape[3:]), BORDER_VALUE
    )
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_image_grid(
    images: ArrayLike, path: Path | str, ncols: int = 8, row_labels: Sequence[str] = ()
) -> None:
    """Write the images [N, H, W] or [N, 3, H, W] (values in [0, 1]) to ``path`` as one PNG
    grid, grey or RGB, its rows named by ``row_labels`` in turn where given."""
    images = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    if images.ndim == 4:
        images = images.transpose(0, 2, 3, 1)  # channels last, as imsave takes RGB
    scale = math.ceil(MIN_CELL_PIXELS / max(images.shape[1:3]))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = tile(images, min(ncols, len(images)))
    if not row_labels:
        imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
        return
    height, width = grid.shape[:2]
    figure = Figure(figsize=((width + LABEL_MARGIN) / LABEL_DPI, height / LABEL_DPI))
    figure.figimage(grid, xo=LABEL_MARGIN, cmap="gray", vmin=0.0, vmax=1.0, origin="upper")
    row_height = images.shape[1] + 1
    for row in range(math.ceil(len(images) / ncols)):
        centre = 1 - (1 + row * row_height + images.shape[1] / 2) / height
        label = row_labels[row % len(row_labels)]
        figure.text((LABEL_MARGIN - 4) / (width + LABEL_MARGIN), centre, label, ha="right",
                    va="center", fontsize=8)  # fmt: skip
    figure.savefig(path, dpi=LABEL_DPI, format="png")
