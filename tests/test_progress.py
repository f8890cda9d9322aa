"""The training bar's label: the job's epochs and its time left."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from vae_lab.components.data import InMemoryDataModule
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule, build_trainer
from vae_lab.training.progress import JobProgressBar, epoch_label, seconds_left


def test_time_left_is_the_remaining_epochs_at_the_mean_epoch_after_the_first():
    # epochs took 10 s (the first: one-off costs), 2 s and 4 s; epoch 3 of 10 starts
    assert seconds_left(3, 10, [0.0, 10.0, 12.0, 16.0]) == pytest.approx(7 * 3.0)


def test_with_one_epoch_done_its_time_is_the_estimate():
    assert seconds_left(1, 4, [0.0, 5.0]) == pytest.approx(3 * 5.0)


def test_no_estimate_before_an_epoch_has_ended():
    assert seconds_left(0, 4, [0.0]) is None
    assert epoch_label(0, 4, [0.0]) == "Epoch 0/4"


def test_the_label_gives_hours_and_no_total_for_a_job_without_one():
    starts = [0.0, 100.0, 105.0, 110.0]  # 5 s an epoch after the first
    assert epoch_label(3, 3280, starts) == "Epoch 3/3280 (4:33:05 left)"
    assert epoch_label(3, -1, starts) == "Epoch 3"


def test_a_run_labels_its_bar_with_the_job(tmp_path, capsys):
    """The config's bar, in a real Trainer: three epochs, each labelled with the job's count,
    the later ones with the time left."""
    cfg = compose_config(["trainer.enable_progress_bar=true", "trainer.max_epochs=3"])
    datamodule: InMemoryDataModule = build_datamodule(cfg)
    model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
    trainer = build_trainer(cfg, tmp_path, logger=None)
    bars = [c for c in trainer.callbacks if isinstance(c, JobProgressBar)]
    assert len(bars) == 1
    trainer.fit(model, datamodule=datamodule)
    shown = capsys.readouterr().out  # where Lightning's bars write
    assert "Epoch 0/3" in shown
    assert "Epoch 2/3 (" in shown and " left)" in shown
    assert len(bars[0].epoch_starts) == 3
