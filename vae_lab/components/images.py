"""Image grids: a batch of images [N, H, W] with values in [0, 1] tiled into one PNG.

Images are laid out row by row, ``ncols`` to a row, separated by a one-pixel grey border, and
each is enlarged by pixel repetition to at least ``MIN_CELL_PIXELS`` on its longer side so
that 8x8 digits stay visible. Values outside [0, 1] are clipped; 0 is black, 1 is white.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.image import imsave
from numpy.typing import ArrayLike

MIN_CELL_PIXELS = 32
BORDER_VALUE = 0.5


def tile(images: np.ndarray, ncols: int, pad: int = 1) -> np.ndarray:
    """[N, H, W] -> one [rows (H + pad) + pad, ncols (W + pad) + pad] array, row by row."""
    n, h, w = images.shape
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad), BORDER_VALUE)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_image_grid(images: ArrayLike, path: Path | str, ncols: int = 8) -> None:
    """Write the images [N, H, W] (values in [0, 1]) to ``path`` as one PNG grid."""
    images = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    scale = math.ceil(MIN_CELL_PIXELS / max(images.shape[1:]))
    images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    grid = tile(images, min(ncols, len(images)))
    imsave(path, grid, cmap="gray", vmin=0.0, vmax=1.0, format="png")
