"""model=conv: the convolutional encoder and decoder on images of any size, as the context of
every posterior family, with every prior and objective; the image shape a checkpoint carries."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import compose_config, options, sized_overrides
from tests.test_posteriors import assert_log_q_is_the_change_of_variables, build_family
from vae_lab.components.conv import conv_networks
from vae_lab.components.data import Digits
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE
from vae_lab.records.collect import default_options
from vae_lab.training.build import RunStamp

pytestmark = pytest.mark.usefixtures("single_thread")  # many small tensor ops

#: a conv model of a few weights, for speed
SMALL = {"channels": "[3,4]", "features": 8}
#: the options of the posterior x prior x objective test: small, and a VampPrior that needs no
#: training set
SIZES = {"posterior": {"hidden_dim": 8}, "prior": {"init": "random", "num_components": 3},
         "objective": {"num_samples": 2, "refine_steps": 1}}  # fmt: skip


@pytest.mark.parametrize(
    ("shape", "strides", "kernel", "residual"),
    [((28, 28), [2, 2], 3, False), ((8, 8), [2, 2], 4, True), ((3, 5, 7), [2, 1], 3, True),
     ((1, 11, 6), [3, 2], 5, False), ((2, 5), [2, 2], 3, False)],
)  # fmt: skip
def test_encoder_and_decoder_shapes_for_any_image_size(shape, strides, kernel, residual):
    nets = conv_networks(shape, latent_dim=3, channels=[2, 4], kernel=kernel, strides=strides,
                         residual=residual, features=5)  # fmt: skip
    x = torch.rand(6, math.prod(shape))
    assert nets.encoder(x).shape == (6, 5) and nets.feature_dim == 5
    assert nets.encoder(x.reshape(2, 3, -1)).shape == (2, 3, 5)  # leading sample dims kept
    assert nets.decoder(torch.randn(4, 6, 3)).shape == (4, 6, math.prod(shape))
    features = nets.encoder(x)
    assert not torch.allclose(features[0], features[1])  # the encoder reads its input


def test_encoder_reads_each_point_as_its_image():
    """A point's features depend only on it, whatever else is in the batch."""
    torch.manual_seed(0)
    nets = conv_networks((3, 6, 5), latent_dim=2, channels=[4], strides=[2], features=7)
    x = torch.rand(5, 90)
    assert torch.allclose(nets.encoder(x)[2], nets.encoder(x[2:3])[0], atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "message"),
    [((64,), "model=conv needs images"), ((4, 4), "shrinks the 4x4 images to nothing")],
)
def test_data_without_an_image_shape_is_a_one_line_error(shape, message):
    small = ["model.kernel=4", "model.channels=[2,2,2]", "model.strides=[2,2,2]"]
    cfg = compose_config(["model=conv", *(small if len(shape) > 1 else [])])
    with pytest.raises(ConfigError, match=message) as info:
        VAE.from_config(cfg, math.prod(shape), shape)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", options("posterior"))
def test_family_log_q_is_the_change_of_variables_with_conv_context(name):
    """The log q and log-det check of tests/test_posteriors, q's context the conv features."""
    torch.manual_seed(0)
    nets = conv_networks((7, 6), latent_dim=2, channels=[3, 4], features=8)
    family = build_family(name, latent_dim=2, feature_dim=nets.feature_dim, hidden_dim=16)
    x = torch.rand(3, 42, dtype=torch.float64)
    q = family.double().distribution(family(nets.encoder.double()(x)))
    assert_log_q_is_the_change_of_variables(q)


def combinations() -> list:
    """Every posterior x prior x objective; the fast suite takes those with the default
    posterior or prior (as tests/test_gradients), ``make test-full`` the rest."""
    default = default_options()
    fast = {(default["posterior"], p) for p in options("prior")}
    fast |= {(p, default["prior"]) for p in options("posterior")}
    return [
        pytest.param(
            posterior,
            prior,
            objective,
            marks=() if (posterior, prior) in fast else pytest.mark.slow,
        )  # fmt: skip
        for posterior in options("posterior")
        for prior in options("prior")
        for objective in options("objective")
    ]


@pytest.mark.parametrize(("posterior", "prior", "objective"), combinations())
def test_every_posterior_prior_and_objective_trains_with_conv(posterior, prior, objective):
    """A training step's loss is finite and reaches the convolutions; the IW estimate of
    log p(x) is finite, on 6x5 images."""
    overrides = ["latent_dim=2", *sized_overrides("model", "conv", SMALL)]
    for group, option in (("posterior", posterior), ("prior", prior), ("objective", objective)):
        overrides += sized_overrides(group, option, SIZES[group])
    torch.manual_seed(0)
    model = VAE.from_config(compose_config(overrides), 30, (6, 5))
    x = torch.bernoulli(torch.full((4, 30), 0.5))
    model.objective.loss(model, x, step=10**9).loss.backward()
    first = model.encoder.convs[0].weight.grad
    assert first is not None and torch.isfinite(first).all() and first.abs().sum() > 0
    with torch.no_grad():
        assert torch.isfinite(model.iw_estimate(x, 5).log_px.value).all()


def test_checkpoint_carries_the_image_shape_and_rebuilds_the_conv_model(tmp_path):
    cfg = compose_config(["model=conv", *(f"model.{k}={v}" for k, v in SMALL.items())])
    datamodule = Digits()
    model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
    checkpoint = {"state_dict": model.state_dict()}
    trainer = SimpleNamespace(datamodule=datamodule)
    RunStamp(cfg).on_save_checkpoint(trainer, model, checkpoint)  # type: ignore[arg-type]
    assert checkpoint["vae_lab"]["image_shape"] == [8, 8]
    torch.save(checkpoint, tmp_path / "conv.ckpt")
    loaded = VAE.load_from_checkpoint(tmp_path / "conv.ckpt")
    x = torch.rand(3, 64)
    assert torch.equal(loaded.encoder(x), model.encoder(x))


def test_checkpoint_without_an_image_shape_loads_as_flat_data(tmp_path):
    """A checkpoint written before the image shape was stamped (an MLP's) still loads."""
    cfg = compose_config()
    model = VAE.from_config(cfg, 64)
    checkpoint = {"state_dict": model.state_dict()}
    checkpoint["vae_lab"] = {"config": RunStamp(cfg).stamp["config"], "data_dim": 64}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    loaded = VAE.load_from_checkpoint(tmp_path / "old.ckpt")
    x = torch.rand(3, 64)
    assert torch.equal(loaded.encoder(x), model.encoder(x))
