"""Adam on random minibatches (Kingma & Ba 2015): the fitting loop shared by the sample-quality
classifier, the refitted priors and the latent diffusion prior, all trained outside Lightning.

Each step draws ``batch_size`` row indices uniformly with replacement from 0..N-1 and takes one
Adam step on ``loss(rows)``; with ``cosine`` the learning rate follows
lr_t = lr (1 + cos(pi t / steps)) / 2 (Loshchilov & Hutter 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from tqdm import tqdm


@torch.inference_mode(False)
@torch.enable_grad()
def minibatch_adam(
    parameters: Iterable[nn.Parameter],
    loss: Callable[[Tensor], Tensor],
    num_rows: int,
    steps: int,
    batch_size: int,
    lr: float,
    desc: str,
    cosine: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> None:
    """``steps`` Adam steps on ``loss(rows)`` for rows [batch_size] of 0..num_rows-1 drawn with
    ``generator`` (the global stream if None) on ``device``. Gradients are on even when called
    from a test loop or ``evaluate`` (inference mode); the data the loss reads must be ordinary
    tensors (clone those made in inference mode)."""
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps) if cosine else None
    for _ in tqdm(range(steps), desc=desc, mininterval=5, leave=False):
        rows = torch.randint(num_rows, (batch_size,), generator=generator, device=device)
        value = loss(rows)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
