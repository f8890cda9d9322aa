"""The networks' initialisation: q's means must depend on x from the first step.

With PyTorch's default initialisation the encoder's means barely vary over MNIST, training
starts on the plateau where the decoder outputs the mean image, and a VampPrior (built from
the encoder's own outputs) holds it there: KL = 0 and no active units, for good.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.components.networks import mlp
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule


def mnist_model(shared_data, prior: str):
    cfg = compose_config(
        ["data=mnist", f"data.root={shared_data}", "latent_dim=50", f"prior={prior}"]
    )
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    return VAE.from_config(cfg, datamodule.data_dim), datamodule.splits[0]


def test_hidden_layers_have_glorot_scale_with_the_activation_gain():
    torch.manual_seed(0)
    net = mlp(784, [200, 200], 50, activation="tanh")
    stds = [float(layer.weight.std()) for layer in net if isinstance(layer, torch.nn.Linear)]
    expected = [5 / 3 * (2 / 984) ** 0.5, 5 / 3 * (2 / 400) ** 0.5, (2 / 250) ** 0.5]
    assert stds == pytest.approx(expected, rel=0.05)
    assert all(float(layer.bias.abs().max()) == 0 for layer in net if hasattr(layer, "bias"))


def test_posterior_means_spread_over_mnist_at_initialisation(shared_data):
    model, train = mnist_model(shared_data, "standard")
    with torch.no_grad():
        means = model.q(train[:1000]).mean
    assert float(means.var(0).mean()) > 0.1  # PyTorch's default initialisation gives ~0.003


def test_vamp_prior_does_not_collapse_at_the_start_of_training(shared_data):
    """200 steps at the start of a KL warm-up over 2500: the collapse took under 100."""
    model, train = mnist_model(shared_data, "vamp")
    model.prior.init_from_data(train)
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(0)
    for step in range(200):
        x = torch.bernoulli(train[torch.randint(len(train), (100,), generator=generator)])
        terms = model.elbo(x)
        loss = -(terms.recon - step / 2500 * terms.kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.bernoulli(train[:1000], generator=generator)
        kl = float(model.elbo(x).kl.mean())
        active = int((model.q(x).mean.var(0) > 0.01).sum())
    assert kl > 1.0 and active >= 10, (kl, active)
