"""Newton updates of a Gaussian q*, and the ELBO q still has to gain, from the curvature of
log p(x, z) (Opper & Archambeau 2009, "The variational Gaussian approximation revisited";
Khan & Rue 2023, "The Bayesian learning rule", its variational online Newton).

For q = N(mu, S) and f(z) = log p(x, z), Bonnet's and Price's theorems give the ELBO's
derivatives in mu and S as expectations under q,

    d ELBO / d mu = E_q[grad f] = g,      d ELBO / d S = 1/2 E_q[hess f] + 1/2 S^-1,

so with H = -E_q[hess f] a stationary q has S^-1 = H (full covariance) or S_ii = 1/H_ii
(diagonal: the best diagonal Gaussian of a Gaussian target, whatever the correlations), and
d^2 ELBO / d mu^2 = -H. One update sets the spread to its stationary value and moves the mean
by a Newton step,

    mu' = mu + H^-1 g,     S' = H^-1  or  diag(1 / H_ii).

Where f is quadratic (a Gaussian model, pPCA) H is constant and both are exact: one update
reaches the family's optimum from any start, a collapsed one (scales 1e-4 of the optimum's)
included, since the new spread does not depend on the old. Elsewhere it is a Newton step on a
local quadratic model, damped (``step`` interpolates the natural parameters S^-1 and mu) and
accepted only where the ELBO does not fall (``vae_lab.estimators.gaps``).

The same quadratic model says how much ELBO is left: maximising it over the family,

    R = 1/2 g^T H^-1 g + 1/2 (tr(H S) - D - log det(H S))            (full covariance)
    R = 1/2 g^T H^-1 g + 1/2 sum_i (H_ii S_ii - 1 - log(H_ii S_ii))   (diagonal),

exactly the ELBO between q and the family's optimum where f is quadratic, an estimate
elsewhere. g and H are Monte Carlo averages over antithetic pairs z = mu +- L eps, which are
exact for a quadratic f (the gradient is affine in z, so its pairs average to grad f(mu), and
the Hessian is constant); elsewhere their noise makes R high in expectation by a term in 1/n
for n draws (E[g^T A g] = g^T A g + tr(A Cov g) for A = H^-1 > 0; H's noise enters through
H^-1 and log det H), which ``vae_lab.estimators.residual`` removes by a jackknife.

H is the average of Hessians, each from D Hessian-vector products by double backpropagation;
where it is not positive definite (f not concave there) its eigenvalues are raised to
``MIN_CURVATURE`` times the largest, a trust region of the quadratic model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, MultivariateNormal
from tqdm import tqdm

from vae_lab.components.posteriors import PosteriorFamily
from vae_lab.estimators.elbo import LogLikelihood, log_weights_of_noise

#: z [S, N, D] -> log p(x, z) [S, N], differentiable in z
LogJoint = Callable[[Tensor], Tensor]
#: row indices [A] of the batch -> log p(x_rows | z), z [S, A, D] -> [S, A]
RowsLogLikelihood = Callable[[Tensor], LogLikelihood]

#: the smallest eigenvalue of H kept, as a fraction of its largest
MIN_CURVATURE = 1e-6


@dataclass
class Gaussian:
    """q = N(loc, scale_tril scale_tril^T) in float64, [N, D] and [N, D, D]; ``diagonal``:
    the family is that of the diagonal Gaussians."""

    loc: Tensor
    scale_tril: Tensor
    diagonal: bool

    @classmethod
    def of(cls, q: Distribution) -> Gaussian | None:
        """q's moments, None where q is not Gaussian."""
        if isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1:
            scale = getattr(q.base_dist, "scale", None)
            if scale is None:
                return None
            return cls(q.mean.double(), torch.diag_embed(scale.double()), True)
        if isinstance(q, MultivariateNormal):
            return cls(q.loc.double(), q.scale_tril.double(), False)
        return None

    def precision(self) -> Tensor:
        return torch.cholesky_inverse(self.scale_tril)

    def take(self, rows: Tensor) -> Gaussian:
        return Gaussian(self.loc[rows], self.scale_tril[rows], self.diagonal)


@dataclass
class Curvature:
    """g = E_q[grad f] [N, D] and H = -E_q[hess f] [N, D, D] (positive definite), float64."""

    grad: Tensor
    hessian: Tensor

    def take(self, rows: Tensor) -> Curvature:
        return Curvature(self.grad[rows], self.hessian[rows])

    def floored(self) -> Curvature:
        """The same g, with H's eigenvalues raised to ``MIN_CURVATURE`` times the largest
        (module docstring), as the update and R need."""
        values, vectors = torch.linalg.eigh(self.hessian)
        least = MIN_CURVATURE * values.abs().amax(-1, keepdim=True).clamp_min(1e-12)
        return Curvature(self.grad, (vectors * values.clamp_min(least).unsqueeze(-2)) @ vectors.mT)

    def newton(self, q: Gaussian, step: Tensor) -> Gaussian:
        """The update of the module docstring, damped: S'^-1 = (1 - step) S^-1 + step H,
        mu' = mu + step H^-1 g, with ``step`` in (0, 1] per datapoint [N]."""
        rate = step.double()[:, None]
        target = (
            torch.diag_embed(self.hessian.diagonal(dim1=-2, dim2=-1))
            if q.diagonal
            else (self.hessian)
        )
        mixed = (1 - rate[..., None]) * q.precision() + rate[..., None] * target
        precision = torch.where(rate[..., None] == 1, target, mixed)  # 0 x inf: no NaN
        scale_tril = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(precision)))
        loc = q.loc + rate * torch.linalg.solve(self.hessian, self.grad)
        return Gaussian(loc, scale_tril, q.diagonal)

    def remaining(self, q: Gaussian) -> Tensor:
        """R of the module docstring, per datapoint [N]: the ELBO the family's optimum of the
        quadratic model has over q."""
        mean_part = 0.5 * (self.grad * torch.linalg.solve(self.hessian, self.grad)).sum(-1)
        log_diag = q.scale_tril.diagonal(dim1=-2, dim2=-1).log()
        if q.diagonal:
            log_ratio = self.hessian.diagonal(dim1=-2, dim2=-1).log() + 2 * log_diag
            spread_part = 0.5 * (log_ratio.exp() - 1 - log_ratio).sum(-1)
        else:  # tr(H S) = tr(L^T H L), log det(H S) = log det H + 2 sum_i log L_ii: no L L^T,
            # whose rounding loses all of an ill-conditioned L
            trace = (q.scale_tril.mT @ self.hessian @ q.scale_tril).diagonal(dim1=-2, dim2=-1)
            log_det = 2 * torch.linalg.cholesky(self.hessian).diagonal(dim1=-2, dim2=-1).log()
            d = q.loc.shape[-1]
            spread_part = 0.5 * (trace.sum(-1) - d - log_det.sum(-1) - 2 * log_diag.sum(-1))
        return mean_part + spread_part


def curvature(log_joint: LogJoint, q: Gaussian, num_pairs: int, dtype: torch.dtype) -> Curvature:
    """g and H of ``Curvature`` from ``num_pairs`` antithetic pairs of draws of q, the model
    evaluated in ``dtype``; H as estimated, not yet floored (``Curvature.floored``), so that
    the H of several groups can be pooled first."""
    n, d = q.loc.shape
    eps = torch.randn(num_pairs, n, d, dtype=torch.float64, device=q.loc.device)
    eps = torch.cat([eps, -eps])
    z = (q.loc + (q.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)).to(dtype)
    with torch.enable_grad():
        z.requires_grad_(True)
        (grad,) = torch.autograd.grad(log_joint(z).sum(), z, create_graph=True)
        rows = [
            torch.autograd.grad(grad[..., k].sum(), z, retain_graph=k < d - 1)[0] for k in range(d)
        ]
    hessian = -torch.stack(rows, -2).double().mean(0)
    hessian = 0.5 * (hessian + hessian.mT)
    return Curvature(grad.detach().double().mean(0), hessian)


@dataclass
class NewtonFit:
    theta: Tensor  # [N, P]
    converged: Tensor  # where R fell below the tolerance, [N] bool
    steps: int  # updates run


#: halvings of a Newton update's step before it is given up for the datapoint
MAX_HALVINGS = 6


def fit_newton(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: RowsLogLikelihood,
    theta0: Tensor,
    max_steps: int,
    num_pairs: int,
    noise: Tensor,
    tol: float,
    progress: bool = False,
) -> NewtonFit:
    """Newton updates of a Gaussian family's theta [N, P] (module docstring) until each
    datapoint's R falls below ``tol`` nats (converged), its update gains less than ``tol`` on
    the given noise (left to the stochastic ascent that follows: R's Monte Carlo noise keeps it
    above ``tol`` near the optimum of a model that is not Gaussian), or ``max_steps`` updates
    ran. An update is accepted where the ELBO on the given noise [S, 1, D] (common random
    numbers) does not fall by more than three of its paired stderrs; else its step is halved,
    up to MAX_HALVINGS times. ``progress`` shows a bar of the updates (each costs D
    Hessian-vector products a sample: minutes on a convolutional decoder)."""
    theta = theta0.detach().clone()
    converged = torch.zeros(theta.shape[0], dtype=torch.bool, device=theta.device)
    active = torch.arange(theta.shape[0], device=theta.device)
    steps = 0
    with tqdm(total=max_steps, desc="q* Newton", disable=not progress, leave=False) as bar:
        while steps < max_steps and len(active):
            steps += 1
            q = Gaussian.of(family.distribution(theta[active]))
            c = curvature(joint(prior, log_likelihood(active)), q, num_pairs, theta.dtype).floored()
            done = c.remaining(q) < tol
            converged[active[done]] = True
            active, q, c = active[~done], q.take(~done), c.take(~done)
            if len(active):
                ll = log_likelihood(active)
                theta[active], gain = damped(family, prior, ll, theta[active], q, c, noise)
                active = active[(gain >= tol) & (gain > 0)]
            bar.update()
            bar.set_postfix(converged=f"{int(converged.sum())}/{len(converged)}")
    return NewtonFit(theta, converged, steps)


def joint(prior: Distribution, log_likelihood: LogLikelihood) -> LogJoint:
    """z -> log p(x, z) = log p(x|z) + log p(z)."""
    return lambda z: log_likelihood(z) + prior.log_prob(z)


def damped(
    family: PosteriorFamily,
    prior: Distribution,
    log_likelihood: LogLikelihood,
    theta: Tensor,
    q: Gaussian,
    c: Curvature,
    noise: Tensor,
) -> tuple[Tensor, Tensor]:
    """theta after the Newton update at the largest step 2^-k, k <= MAX_HALVINGS, that the
    fixed-noise ELBO accepts (``fit_newton``), theta as it was where none is; and the ELBO
    that update gained on the noise (0 where none was accepted), float64 [N]."""
    eps = noise.expand(-1, theta.shape[0], -1)
    with torch.no_grad():
        old, _ = log_weights_of_noise(family.distribution(theta), prior, log_likelihood, eps)
    rate = torch.ones(theta.shape[0], dtype=torch.float64, device=theta.device)
    searching = torch.ones_like(rate, dtype=torch.bool)
    out = theta.clone()
    gain = torch.zeros_like(rate)
    for _ in range(MAX_HALVINGS + 1):
        new = c.newton(q, rate)
        candidate = family.gaussian_params(new.loc.to(theta.dtype), new.scale_tril.to(theta.dtype))
        with torch.no_grad():
            log_w, _ = log_weights_of_noise(
                family.distribution(candidate), prior, log_likelihood, eps
            )
        diff = (log_w - old).double()
        stderr = diff.std(0) / math.sqrt(diff.shape[0])
        ok = searching & (diff.mean(0) >= -3 * stderr) & candidate.isfinite().all(-1)
        out[ok] = candidate[ok]
        gain[ok] = diff.mean(0)[ok]
        searching &= ~ok
        if not searching.any():
            break
        rate = torch.where(searching, rate / 2, rate)
    return out, gain
