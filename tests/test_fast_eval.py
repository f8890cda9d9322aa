"""Speed settings of the evaluation: the device's default chunk size and the compiled
log p(x|z), which must give the eager numbers."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import compose_config
from vae_lab.build import build_model
from vae_lab.fast_eval import CPU_CHUNK_SIZE, GPU_SAMPLES_IN_FLIGHT, default_chunk_size


def model(overrides: list[str] = ()):
    torch.manual_seed(0)
    return build_model(compose_config(list(overrides)), 64).eval()


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
    compiled = vae.compile_log_likelihood()
    ours = estimate()
    assert compiled.seconds > 0  # the compiled function ran, and its compilation was timed
    assert torch.allclose(ours, eager, rtol=1e-6, atol=1e-4)


def test_gradients_go_through_the_eager_log_likelihood():
    vae = model()
    vae.compile_log_likelihood()
    z = torch.randn(2, 3, vae.posterior.latent_dim, requires_grad=True)
    x = torch.bernoulli(torch.full((3, 64), 0.5))
    vae.log_likelihood(x)(z).sum().backward()
    assert vae.compiled_log_likelihood.seconds == 0  # never called with a gradient
    assert z.grad is not None


@pytest.mark.parametrize("value", ["0", "yes"])
def test_bad_eval_speed_settings_are_refused(value):
    from vae_lab.validation import ConfigError, validate

    key = "eval.chunk_size" if value == "0" else "eval.compile"
    with pytest.raises(ConfigError, match=key):
        validate(compose_config([f"{key}={value}"]))
