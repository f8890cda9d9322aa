"""Observation models p(x|z): the decoder's output parameterises a torch distribution.

Each returns a distribution whose event is one flattened datapoint (Bernoulli and Gaussian
an ``Independent`` one, the discretized logistic its own), so ``log_prob(x)`` sums over pixels
and broadcasts over leading sample dimensions of z.

Each says what data it models: ``binary_data`` (the data module binarises grey levels for it)
and ``grey_levels`` (the levels k/(L-1) its log_prob is a probability of, None for a density or
for binary data; the data module refuses data off that grid).

They are built without argument validation: ``log_prob`` is the hot path of training and of
the IW estimate (logits of shape [S, B, X], e.g. 39M values per chunk on MNIST), where
checking the support of x broadcast to that shape costs as much as the density itself. A
non-finite decoder output still surfaces, as a non-finite loss (``VAE.training_step`` raises).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Distribution, Independent

from vae_lab.components.discretized_logistic import LEVELS, DiscretizedLogistic
from vae_lab.components.normal import DiagonalNormal


class BernoulliLogDensity(torch.autograd.Function):
    """sum_i x_i l_i - softplus(l_i) over the last dimension, for x that broadcasts to the shape
    and dtype of l. The forward pass fills one buffer of l's shape (softplus(l), from which x l
    is subtracted in place), and so does the backward pass, d/dl = x - sigmoid(l), except where
    the gradient's own graph is built (``create_graph=True``: semi-amortized inference
    differentiates through gradient steps on log p(x|z), ``vae_lab.model.objectives.savae``), where
    it runs out of place, differentiably (slower, and only where that graph is needed).
    torch's Bernoulli path allocates more buffers and runs more kernels each way."""

    @staticmethod
    def forward(ctx: Any, logits: Tensor, value: Tensor) -> Tensor:
        ctx.save_for_backward(logits, value)
        return F.softplus(logits).addcmul_(value, logits, value=-1).sum(-1).neg_()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        logits, value = ctx.saved_tensors
        grad = grad.unsqueeze(-1)
        grad_logits = grad_value = None
        if ctx.needs_input_grad[0]:
            sigmoid = torch.sigmoid(logits)
            if torch.is_grad_enabled():  # backward with create_graph=True
                grad_logits = (value - sigmoid) * grad
            else:
                grad_logits = sigmoid.neg_().add_(value).mul_(grad)
        if ctx.needs_input_grad[1]:
            grad_value = (logits * grad).sum_to_size(value.shape)
        return grad_logits, grad_value


#: most pixels per block of ``bernoulli_log_density_by_products``: a product of factors in
#: (1, 2] over a block is at most 2^1000, finite in float64
PRODUCT_BLOCK = 1000


def bernoulli_log_density_by_products(logits: Tensor, value: Tensor) -> Tensor:
    """sum_i x_i l_i - softplus(l_i) over the last dimension, with one exp per pixel and one
    log per block of up to ``PRODUCT_BLOCK`` pixels instead of a log1p per pixel:

        softplus(l) = max(l, 0) + log(1 + e^-|l|),
        sum_i log(1 + e^-|l_i|) = log prod_i (1 + e^-|l_i|),

    each factor in (1, 2], multiplied in float64 (relative rounding 1e-16 a factor; the
    float32 e^-|l| contributes at most 1.2e-7 nats a pixel), the sum over pixels accumulated
    in float64 too. The same number as ``BernoulliLogDensity`` to float32 rounding, which sums
    in float32. Compiled (``vae_lab.estimators.fast_eval``), where the elementwise steps fuse into
    one pass, the log1p per pixel is the costliest step of the density on a CPU; there this form,
    one log per block, is faster than both the compiled softplus form and the eager
    ``BernoulliLogDensity`` (docs/speed.md, "Where the time goes").
    """
    dim = logits.shape[-1]
    blocks = -(-dim // PRODUCT_BLOCK)
    size = -(-dim // blocks)
    factors = torch.exp(-logits.abs()).double().add(1.0)
    factors = F.pad(factors, (0, blocks * size - dim), value=1.0).unflatten(-1, (blocks, size))
    linear = (value * logits - logits.clamp_min(0.0)).double().sum(-1)
    return (linear - factors.prod(-1).log().sum(-1)).to(logits.dtype)


class BernoulliPixels(Independent):
    """Independent Bernoulli pixels with logits l, the log-density summed over the pixels:

        log p(x|z) = sum_i x_i l_i - softplus(l_i),

    which is torch's ``Bernoulli(logits=l).log_prob(x)`` (= -BCE with logits) summed, computed
    by ``BernoulliLogDensity`` without first broadcasting x to the shape of l (x [B, X] against
    l [S, B, X]); l is expanded only where x is not its trailing shape (x with more dimensions).
    """

    def __init__(self, logits: Tensor) -> None:
        super().__init__(Bernoulli(logits=logits, validate_args=False), 1, validate_args=False)

    def log_prob(self, value: Tensor) -> Tensor:
        logits = self.base_dist.logits
        if value.dim() > logits.dim() or value.shape != logits.shape[logits.dim() - value.dim() :]:
            logits = logits.expand(torch.broadcast_shapes(logits.shape, value.shape))
        dtype = torch.promote_types(logits.dtype, value.dtype)
        if torch.compiler.is_compiling() and logits.device.type == "cpu":  # measured there only
            return bernoulli_log_density_by_products(logits.to(dtype), value.to(dtype))
        return BernoulliLogDensity.apply(logits.to(dtype), value.to(dtype))


class BernoulliLikelihood(nn.Module):
    """p(x|z) = prod_i Bernoulli(x_i; sigmoid(l_i)), l = decoder(z): logits. For binary data."""

    binary_data = True
    grey_levels: int | None = None

    def __init__(self, data_dim: int) -> None:
        super().__init__()
        self.data_dim = data_dim

    def forward(self, decoded: Tensor) -> Distribution:
        return BernoulliPixels(decoded)

    def mean(self, decoded: Tensor) -> Tensor:
        """E[x|z], the image shown as a reconstruction or a sample."""
        return torch.sigmoid(decoded)


class GaussianLikelihood(nn.Module):
    """p(x|z) = N(x; mu(z), sigma^2 I), mu = decoder(z), for grey-level data.

    sigma is one scalar, fixed at ``scale`` or learned from it (``learn_scale``), kept above
    ``min_scale`` so that the density stays bounded on near-constant pixels.
    """

    binary_data = False
    grey_levels: int | None = None

    def __init__(
        self, data_dim: int, scale: float = 1.0, learn_scale: bool = True, min_scale: float = 1e-3
    ) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.min_scale = min_scale
        log_scale = torch.tensor(math.log(scale))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp_min(self.min_scale)

    def forward(self, decoded: Tensor) -> Distribution:
        return DiagonalNormal(decoded, self.scale)

    def mean(self, decoded: Tensor) -> Tensor:
        return decoded


class DiscretizedLogisticLikelihood(nn.Module):
    """p(x|z) = prod_i DiscretizedLogistic(x_i; mu_i(z), s_i), mu = decoder(z), for 8-bit grey
    levels x = k/255 (``vae_lab.components.discretized_logistic``; Kingma et al. 2016, Salimans
    et al. 2017): log p(x|z) is a log-probability of the pixel values, so -log p(x) / (D ln 2)
    is in bits per dimension.

    The log-scale is learned, not decoded: one per pixel (``per_pixel_scale``) or one shared,
    starting at ``scale`` and kept above ``min_scale`` (a smaller s only sharpens the bins,
    whose probabilities stay at most 1, but 1/s must stay finite).
    """

    binary_data = False
    grey_levels: int | None = LEVELS

    def __init__(
        self,
        data_dim: int,
        scale: float = 0.1,
        per_pixel_scale: bool = True,
        min_scale: float = 1e-5,
    ) -> None:
        super().__init__()
        self.data_dim = data_dim
        self.min_scale = min_scale
        shape = (data_dim,) if per_pixel_scale else ()
        self.log_scale = nn.Parameter(torch.full(shape, math.log(scale)))

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp().clamp_min(self.min_scale)

    def forward(self, decoded: Tensor) -> Distribution:
        return DiscretizedLogistic(decoded, self.scale)

    def mean(self, decoded: Tensor) -> Tensor:
        return DiscretizedLogistic(decoded, self.scale).mean
