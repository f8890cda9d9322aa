"""The training progress: the job's epochs and its time left, as a bar or as lines."""

from __future__ import annotations

import pytest

from tests.conftest import compose_config
from vae_lab.components.data import InMemoryDataModule
from vae_lab.config.validation import ConfigError
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule, build_trainer
from vae_lab.training.progress import JobProgressBar, epoch_label, progress_line, seconds_left


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


def test_a_line_gives_the_label_and_the_figures():
    line = progress_line("Epoch 3/10 (00:14 left)", {"train/loss": 88.9012, "val/elbo": -98.3})
    assert line == "Epoch 3/10 (00:14 left): train/loss=88.9, val/elbo=-98.3"
    assert progress_line("Epoch 0/4", {}) == "Epoch 0/4"


def fit(tmp_path, overrides: list[str]) -> JobProgressBar:
    """Three epochs of the shrunk config with its progress bar on; the bar callback."""
    cfg = compose_config(["trainer.enable_progress_bar=true", "trainer.max_epochs=3", *overrides])
    datamodule: InMemoryDataModule = build_datamodule(cfg)
    model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
    trainer = build_trainer(cfg, tmp_path, logger=None)
    (bar,) = [c for c in trainer.callbacks if isinstance(c, JobProgressBar)]
    trainer.fit(model, datamodule=datamodule)
    assert len(bar.epoch_starts) == 3
    return bar


def test_on_a_terminal_the_bar_is_labelled_with_the_job(tmp_path, capsys):
    """bar=true (a terminal's default): each epoch's bar gives the job's count, the later ones
    the time left; no lines."""
    fit(tmp_path, ["callbacks.progress_bar.bar=true"])
    shown = capsys.readouterr().out  # where Lightning's bars write
    assert "Epoch 0/3:" in shown and "Epoch 2/3 (" in shown and " left)" in shown
    assert "it/s" in shown
    assert "Epoch 3/3" not in shown  # the line that follows the last epoch in a file


def test_in_a_file_no_bar_but_lines(tmp_path, capsys):
    """Output that is not a terminal (pytest's capture): no bar; a line after the first epoch,
    and after the last, but not between when line_every_s has not passed."""
    fit(tmp_path, ["callbacks.progress_bar.line_every_s=3600"])
    lines = capsys.readouterr().out.splitlines()
    shown = [line for line in lines if line.startswith("Epoch")]
    assert len(shown) == 2, lines
    assert (
        shown[0].startswith("Epoch 1/3 (") and "left): " in shown[0] and "train/loss=" in shown[0]
    )
    assert shown[1].startswith("Epoch 3/3 (00:00 left): ")
    assert not any("it/s" in line for line in lines)


def test_every_epoch_a_line_when_asked(tmp_path, capsys):
    fit(tmp_path, ["callbacks.progress_bar.line_every_s=0"])
    shown = [x for x in capsys.readouterr().out.splitlines() if x.startswith("Epoch")]
    assert [x.split(" (")[0] for x in shown] == ["Epoch 1/3", "Epoch 2/3", "Epoch 3/3"]


@pytest.mark.parametrize("override", ["line_every_s=-1", "line_every_s=soon", "bar=1",
                                      "refresh_rate=-2"])  # fmt: skip
def test_a_bad_setting_is_one_config_error_naming_its_key(tmp_path, override):
    cfg = compose_config([f"callbacks.progress_bar.{override}"])
    with pytest.raises(ConfigError, match=f"^callbacks.progress_bar.{override} is invalid"):
        build_trainer(cfg, tmp_path, logger=None)
