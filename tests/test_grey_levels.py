"""A likelihood of 8-bit grey levels takes data on its grid k/255 and refuses other data in one
line; Bernoulli and Gaussian likelihoods take any data."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from vae_lab.config.validation import ConfigError
from vae_lab.training.build import build_datamodule


@pytest.mark.parametrize(
    ("overrides", "holds"),
    [
        ([], "data=digits holds 17 grey levels k/16"),
        (["data=linear_gaussian", "model=linear"], "data=linear_gaussian holds real values"),
    ],
)
def test_discretized_logistic_refuses_data_off_its_grid_in_one_line(overrides, holds):
    cfg = compose_config(["likelihood=discretized_logistic", *overrides])
    with pytest.raises(ConfigError) as err:
        build_datamodule(cfg).setup()
    message = str(err.value)
    assert holds in message and "256 grey levels k/255" in message and "\n" not in message


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_other_likelihoods_take_digits(likelihood):
    datamodule = build_datamodule(compose_config([f"likelihood={likelihood}"]))
    datamodule.setup()
    assert datamodule.grey_levels is None


def test_binary_data_lie_on_the_8_bit_grid(monkeypatch):
    """0 and 1 are grey levels 0 and 255: binary data pass the check."""
    datamodule = build_datamodule(compose_config(["likelihood=discretized_logistic"]))
    monkeypatch.setattr(datamodule, "pixel_levels", 2)
    datamodule.check_levels()
