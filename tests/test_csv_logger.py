"""The CSV logger: rows appended as they are saved, the header widened by a new metric name,
rows after a checkpoint dropped on resume, and a save that never reads the rows it keeps."""

from __future__ import annotations

import csv

import pytest

from vae_lab.records import csv_logger
from vae_lab.records.csv_logger import CSVLogger


def rows_of(logger: CSVLogger) -> list[dict[str, str]]:
    with logger.path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_rows_are_appended_and_a_new_name_widens_the_header(tmp_path):
    logger = CSVLogger(str(tmp_path))
    logger.log_metrics({"train/loss": 3.0}, step=0)
    logger.save()
    logger.log_metrics({"train/loss": 2.0}, step=1)
    logger.save()
    logger.log_metrics({"val/elbo": -5.0}, step=1)
    logger.finalize("success")
    assert rows_of(logger) == [
        {"step": "0", "train/loss": "3.0", "val/elbo": ""},
        {"step": "1", "train/loss": "2.0", "val/elbo": ""},
        {"step": "1", "train/loss": "", "val/elbo": "-5.0"},
    ]


def test_a_save_with_known_names_appends_without_reading_the_rows(tmp_path, monkeypatch):
    logger = CSVLogger(str(tmp_path))
    logger.log_metrics({"train/loss": 3.0}, step=0)
    logger.save()

    def read_all(path):
        pytest.fail("the whole file was read to append a row")

    monkeypatch.setattr(csv_logger, "_read", read_all)
    for step in range(1, 4):
        logger.log_metrics({"train/loss": 3.0 - step}, step=step)
        logger.save()
    monkeypatch.undo()
    assert [r["step"] for r in rows_of(logger)] == ["0", "1", "2", "3"]


def test_a_resumed_run_continues_the_file_without_the_rows_it_trains_again(tmp_path):
    first = CSVLogger(str(tmp_path))
    for step in range(5):
        first.log_metrics({"train/loss": float(step)}, step=step)
    first.finalize("interrupted")
    resumed = CSVLogger(str(tmp_path))
    resumed.keep_until(3)
    resumed.log_metrics({"train/loss": 30.0}, step=3)
    resumed.finalize("success")
    assert [(r["step"], r["train/loss"]) for r in rows_of(resumed)] == [
        ("0", "0.0"), ("1", "1.0"), ("2", "2.0"), ("3", "30.0")
    ]  # fmt: skip
