"""The training step skips ``self.log`` on steps whose logs Lightning would discard: the
records written are the same as when every step logs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.conftest import compose_config
from vae_lab.module import VAE
from vae_lab.run import execute


def train_rows(cfg_overrides: list[str], folder: Path) -> tuple[list[dict[str, str]], float]:
    """The rows of metrics.csv with train metrics, and metrics.json's final train/loss."""
    record = execute(compose_config(cfg_overrides), folder, {})
    with (folder / "csv" / "metrics.csv").open() as file:
        return [row for row in csv.DictReader(file) if row["train/loss"]], record["train/loss"]


@pytest.mark.parametrize("stop", ["trainer.max_epochs=2", "trainer.max_steps=5"])
def test_skipped_logs_lose_no_record(tmp_path, monkeypatch, stop):
    overrides = ["logger=csv", "trainer.log_every_n_steps=2", "trainer.limit_train_batches=3",
                 "trainer.max_epochs=2", stop, "callbacks.image_grids=null",
                 "callbacks.sample_quality=null"]  # fmt: skip
    skipping, final = train_rows(overrides, tmp_path / "skipping")
    monkeypatch.setattr(VAE, "_logs_this_step", lambda self, batch_idx: True)
    every, final_every = train_rows(overrides, tmp_path / "every")
    assert [r["step"] for r in skipping] == [r["step"] for r in every]
    assert len(skipping) >= 2
    assert final == final_every  # the last step's loss, in metrics.json
    for ours, theirs in zip(skipping, every, strict=True):
        assert float(ours["train/loss"]) == pytest.approx(float(theirs["train/loss"]), rel=1e-6)
