"""Speed settings of the evaluation: the device's default chunk size and the compiled
estimates, which must give the eager numbers."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.estimators.fast_eval import CPU_CHUNK_SIZE, GPU_SAMPLES_IN_FLIGHT, default_chunk_size
from vae_lab.model.module import VAE


def model(overrides: list[str] = ()):
    torch.manual_seed(0)
    return VAE.from_config(compose_config(list(overrides)), 64).eval()


def test_default_chunk_size_per_device():
    assert default_chunk_size(torch.device("cpu"), 100) == CPU_CHUNK_SIZE
    assert default_chunk_size(torch.device("cuda"), 100) == GPU_SAMPLES_IN_FLIGHT // 100
    assert default_chunk_size(torch.device("cuda"), 10**9) == 1
    assert model(["eval.chunk_size=null"]).chunk_size_for(100) == CPU_CHUNK_SIZE
    assert model(["eval.chunk_size=7"]).chunk_size_for(100) == 7  # an int is used as given


@pytest.mark.slow  # torch.compile takes tens of seconds on a small CPU
def test_compiled_log_likelihood_gives_the_eager_numbers():
    vae = model()
    x = torch.bernoulli(torch.full((5, 64), 0.3))

    def estimate() -> torch.Tensor:
        torch.manual_seed(1)
        with torch.no_grad():
            return vae.iw_estimate(x, 40, 10).log_px.value

    eager = estimate()
    vae.compile_estimates()
    ours = estimate()
    assert vae.compile_seconds > 0  # the compiled function ran, and its compilation was timed
    assert torch.allclose(ours, eager, rtol=1e-6, atol=1e-4)


def test_gradients_go_through_the_eager_log_likelihood():
    vae = model()
    vae.compile_estimates()
    z = torch.randn(2, 3, vae.posterior.latent_dim, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 64), 0.5))
    vae.log_likelihood(x)(z).sum().backward()
    assert vae.compile_seconds == 0  # never called with a gradient
    assert z.grad is not None


@pytest.mark.parametrize("value", ["0", "yes"])
def test_bad_eval_speed_settings_are_refused(value):
    from vae_lab.config.validation import ConfigError, validate

    key = "eval.chunk_size" if value == "0" else "eval.compile"
    with pytest.raises(ConfigError, match=key):
        validate(compose_config([f"{key}={value}"]))


@pytest.mark.slow  # one torch.compile per family
@pytest.mark.parametrize(
    "overrides",
    [["posterior=full_cov"], ["posterior=planar", "prior=vamp"], ["posterior=realnvp"]],
)
def test_compiled_log_weights_of_every_family_give_the_eager_numbers(overrides):
    """The compiled IW path (noise drawn outside, log-weights of each chunk compiled) draws the
    eager path's noise and gives its estimate, for q* parameters (``theta``) as well."""
    vae = model(overrides)
    x = torch.bernoulli(torch.full((5, 64), 0.3))

    def estimates() -> list[torch.Tensor]:
        torch.manual_seed(1)
        with torch.no_grad():
            theta = vae.posterior(vae.encoder(x)) + 0.1  # not the encoder's: a q* of x
            return [vae.iw_estimate(x, 40, 10).log_px.value,
                    vae.iw_estimate(x, 40, 10, theta=theta).elbo.value]  # fmt: skip

    eager = estimates()
    vae.compile_estimates()
    ours = estimates()
    assert vae.compiled_log_weights.seconds > 0
    for got, want in zip(ours, eager, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-4)
