"""Triangular matrices assembled from a diagonal and the entries off it, per datapoint."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Triangular(nn.Module):
    """Maps diag [..., D] and off-diagonal entries [..., D(D-1)/2] to a [..., D, D] matrix,
    lower (``upper=False``) or upper triangular, the entries in ``torch.tril_indices`` /
    ``torch.triu_indices`` order.

    The entries are scattered into a flat [..., D*D] buffer through one precomputed index, which
    with its backward costs less than half of assigning through a (row, column) index pair.
    """

    def __init__(self, dim: int, upper: bool) -> None:
        super().__init__()
        self.dim = dim
        rows, cols = (torch.triu_indices if upper else torch.tril_indices)(
            dim, dim, 1 if upper else -1
        )
        self.register_buffer("flat_index", rows * dim + cols, persistent=False)

    def forward(self, diag: Tensor, off_diag: Tensor) -> Tensor:
        batch = off_diag.shape[:-1]
        index = self.flat_index.expand(*batch, -1)
        flat = off_diag.new_zeros(*batch, self.dim * self.dim).scatter(-1, index, off_diag)
        return flat.unflatten(-1, (self.dim, self.dim)) + torch.diag_embed(diag)
