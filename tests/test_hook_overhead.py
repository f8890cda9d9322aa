"""The cheap versions of what Lightning does around each hook behave as Lightning's own."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import SimpleProfiler
from torch import nn

from tests.conftest import compose_config
from vae_lab.build import build_trainer
from vae_lab.hook_overhead import BestCheckpoint, CheapAttributes, NullProfiler


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.register_buffer("stat", torch.zeros(2))
        self.child = nn.Linear(2, 2)
        self.note = "plain"


class Cheap(CheapAttributes, Plain):
    pass


def state(module: nn.Module) -> tuple:
    """What nn.Module keeps of its attributes, comparable across the two classes."""
    return (
        {k: v for k, v in module.__dict__.items() if not k.startswith("_")},
        {k: v is None for k, v in module._parameters.items()},
        {k: v is None for k, v in module._buffers.items()},
        {k: v is None for k, v in module._modules.items()},
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("note", "changed"),
        ("note", None),
        ("count", 3),
        ("flag", True),
        ("rate", 0.5),
        ("weight", None),  # a parameter set to None stays a registered parameter
        ("stat", None),
        ("child", None),
        ("extra", torch.zeros(1)),
        ("extra", nn.Parameter(torch.zeros(1))),
        ("extra", nn.Linear(1, 1)),
    ],
)
def test_attributes_are_set_as_nn_module_sets_them(name: str, value: object) -> None:
    plain, cheap = Plain(), Cheap()
    setattr(plain, name, value)
    setattr(cheap, name, value)
    assert state(cheap) == state(plain)
    assert (getattr(cheap, name) is None) == (value is None)


@pytest.mark.parametrize("name", ["weight", "stat", "child"])
def test_a_plain_value_for_a_registered_name_is_refused_as_by_nn_module(name: str) -> None:
    with pytest.raises(TypeError) as plain_error:
        setattr(Plain(), name, "text")
    with pytest.raises(TypeError) as cheap_error:
        setattr(Cheap(), name, "text")
    assert str(cheap_error.value) == str(plain_error.value)


def test_checkpoint_state_key_is_lightnings(tmp_path: Path) -> None:
    settings = {"dirpath": tmp_path, "monitor": "val/elbo", "mode": "max", "save_last": True}
    cached = BestCheckpoint(**settings)
    assert cached.state_key == ModelCheckpoint(**settings).state_key
    assert "val/elbo" in cached.state_key


def test_profiler_is_null_unless_configured(tmp_path: Path) -> None:
    trainer = build_trainer(compose_config(), tmp_path / "a", None)
    assert isinstance(trainer.profiler, NullProfiler)
    with trainer.profiler.profile("step") as entered:
        assert entered is None
    configured = build_trainer(compose_config(["trainer.profiler=simple"]), tmp_path / "b", None)
    assert isinstance(configured.profiler, SimpleProfiler)


def test_a_property_of_the_lightning_module_is_set_through_its_setter() -> None:
    class Module(CheapAttributes, pl.LightningModule):
        pass

    module = Module()
    module.automatic_optimization = False  # a property of LightningModule, a plain bool
    assert module._automatic_optimization is False
    assert "automatic_optimization" not in vars(module)
