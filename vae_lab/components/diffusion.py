"""A latent diffusion prior: a denoising diffusion model over the VAE's codes z (DDPM, Ho, Jain
& Abbeel 2020), fitted after training to the aggregate posterior's codes, as latent diffusion
models do in a VAE's latent space (Vahdat, Kreis & Kautz 2021; Rombach et al. 2022), here
with a small MLP denoiser.

On standardised codes z0 = (z - m) / s, the forward process adds Gaussian noise over T steps
with a linear schedule beta_1..beta_T, so that with alpha-bar_t = prod_{u<=t} (1 - beta_u)

    z_t = sqrt(alpha-bar_t) z0 + sqrt(1 - alpha-bar_t) eps,   eps ~ N(0, I).

The denoiser eps_theta(z_t, t) is trained on Ho et al.'s simple loss
E_{t, z0, eps} |eps - eps_theta(z_t, t)|^2, and samples are drawn by ancestral sampling from
z_T ~ N(0, I),

    z_{t-1} = (z_t - beta_t / sqrt(1 - alpha-bar_t) eps_theta(z_t, t)) / sqrt(1 - beta_t)
              + sqrt(beta_t) n,   n ~ N(0, I)  (no noise at the last step),

then z = m + s z0. Its density has no closed form (only a bound), so the refitted diffusion
prior reports sample metrics, never a log-likelihood.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vae_lab.components.minibatch_adam import minibatch_adam

TIME_FEATURES = 64  # sinusoidal embedding of t


def time_embedding(t: Tensor, dim: int = TIME_FEATURES) -> Tensor:
    """[sin(t w_j), cos(t w_j)], w_j = 10000^(-j / (dim/2)) (Vaswani et al. 2017), for t [N]."""
    frequencies = torch.exp(
        -math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2)
    )
    angles = t.float()[:, None] * frequencies
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


class LatentDiffusion(nn.Module):
    """DDPM over z in R^latent_dim; ``fit(codes)`` then ``sample(n)``."""

    def __init__(
        self,
        latent_dim: int,
        timesteps: int = 1000,
        hidden: int = 256,
        steps: int = 10000,
        batch_size: int = 500,
        lr: float = 1e-3,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ) -> None:
        super().__init__()
        self.timesteps = timesteps
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alpha_bars", torch.cumprod(1 - betas, 0).float())
        self.register_buffer("shift", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.denoiser = nn.Sequential(
            nn.Linear(latent_dim + TIME_FEATURES, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, latent_dim),
        )

    def predicted_noise(self, z_t: Tensor, t: Tensor) -> Tensor:
        """eps_theta(z_t, t) for z_t [N, D] and integer steps t [N] in 0..T-1."""
        return self.denoiser(torch.cat([z_t, time_embedding(t)], dim=-1))

    def loss(self, z0: Tensor) -> Tensor:
        """Ho et al.'s simple loss on standardised codes z0 [N, D]."""
        t = torch.randint(self.timesteps, (len(z0),), device=z0.device)
        noise = torch.randn_like(z0)
        alpha_bar = self.alpha_bars[t][:, None]
        z_t = alpha_bar.sqrt() * z0 + (1 - alpha_bar).sqrt() * noise
        return (self.predicted_noise(z_t, t) - noise).pow(2).sum(-1).mean()

    def fit(self, codes: Tensor) -> LatentDiffusion:
        """Standardise the codes [N, D] and train the denoiser for ``steps`` Adam steps, the
        learning rate annealed by a cosine."""
        with torch.inference_mode(False):
            codes = codes.detach().clone()
            self.shift.copy_(codes.mean(0))
            self.scale.copy_(codes.std(0).clamp_min(1e-6))
            z0 = (codes - self.shift) / self.scale
        self.train()
        minibatch_adam(
            self.denoiser.parameters(), lambda rows: self.loss(z0[rows]), len(z0), self.steps,
            self.batch_size, self.lr, "diffusion prior", cosine=True, device=z0.device,
        )  # fmt: skip
        return self.eval().requires_grad_(False)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """n codes [n, D] by ancestral sampling from z_T ~ N(0, I)."""
        z = torch.randn(n, self.shift.numel(), device=self.shift.device)
        for step in reversed(range(self.timesteps)):
            t = torch.full((n,), step, device=z.device, dtype=torch.long)
            beta, alpha_bar = self.betas[step], self.alpha_bars[step]
            eps = self.predicted_noise(z, t)
            z = (z - beta / (1 - alpha_bar).sqrt() * eps) / (1 - beta).sqrt()
            if step > 0:
                z = z + beta.sqrt() * torch.randn_like(z)
        return self.shift + self.scale * z
