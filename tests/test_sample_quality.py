"""Sample quality: FID, KID and precision/recall behave as distances; the feature classifier
is cached once per dataset; a run reports the test/*_samples metrics."""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from hydra.utils import instantiate
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from tests.conftest import SAMPLE_QUALITY_STAGE, SMALL_CLASSIFIER, classifier_spec, compose_config
from vae_lab.components.data import BinarizedMNIST, Digits, IDXImages, LinearGaussian
from vae_lab.evaluation.sample_quality import (
    ClassifierSpec,
    PrecisionRecall,
    SampleQualityMetrics,
    cached_classifier,
)
from vae_lab.evaluation.sample_quality import classifier as classifier_module
from vae_lab.evaluation.sample_quality.classifier import (
    FeatureClassifier,
    classifier_source,
    held_out_accuracies,
)
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute
from vae_lab.training.build import build_datamodule

pytestmark = pytest.mark.usefixtures("single_thread")  # small classifiers and metrics


@pytest.fixture(scope="module")
def digits_classifier(
    small_classifier_overrides: list[str],
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The session's small digits classifier and its record, from its cache."""
    return cached_classifier(Digits(), classifier_spec(small_classifier_overrides))


class Features(nn.Module):
    """Identity features: the 'images' are feature vectors already."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


def test_fid_is_zero_for_identical_feature_statistics_and_the_frechet_distance_otherwise():
    torch.manual_seed(0)
    features = torch.randn(500, 8) @ torch.randn(8, 8) + 3.0
    fid = FrechetInceptionDistance(feature=Features(8))
    fid.update(features, real=True)
    fid.update(features[torch.randperm(500)], real=False)  # other order, same statistics
    assert abs(float(fid.compute())) < 1e-3
    moved = features + torch.linspace(1.0, 4.0, 8)  # other mean, and the covariance of the
    fid.update(moved, real=False)  # pooled fake set widens along the shift
    fake = torch.cat([features, moved]).double()
    real = features.double()
    mean_term = float((real.mean(0) - fake.mean(0)).pow(2).sum())
    cov_r, cov_g = np.cov(real.T.numpy()), np.cov(fake.T.numpy())
    root = scipy.linalg.sqrtm(cov_r @ cov_g).real
    expected = mean_term + float(np.trace(cov_r + cov_g - 2 * root))
    assert expected > 1.2 * mean_term  # the covariance term counts
    assert float(fid.compute()) == pytest.approx(expected, rel=1e-4)


def test_fid_of_test_halves_is_small_and_of_noise_is_large(digits_classifier):
    classifier, _ = digits_classifier
    test = Digits().load_splits()[2]
    half = len(test) // 2
    metrics = SampleQualityMetrics(classifier, kid_subset_size=100)
    noise = torch.rand(half, test.shape[1], generator=torch.Generator().manual_seed(0))
    metrics.update(test[:half], test[half : 2 * half], noise)
    values = metrics.compute()
    assert values["fid_samples"] > 10 * values["fid_recon"]
    assert values["recall_samples"] < 0.1  # noise images cover none of the digits
    metrics.reset()
    metrics.update(test[:half], test[half : 2 * half], test[half : 2 * half])
    halves = metrics.compute()
    assert halves["fid_samples"] == values["fid_recon"]
    assert values["kid_samples"] > 10 * halves["kid_samples"]
    assert min(halves["precision_samples"], halves["recall_samples"]) > 0.8


def test_kid_is_unbiased_on_two_samples_of_one_distribution():
    metrics = []
    for seed in range(40):
        generator = torch.Generator().manual_seed(seed)
        real, fake = torch.randn(2, 60, 4, generator=generator)
        quality = SampleQualityMetrics(Features(4), kid_subsets=1, kid_subset_size=60)
        quality.update(real, real, fake)
        metrics.append(quality.compute(seed)["kid_samples"])
    values = torch.tensor(metrics, dtype=torch.float64)
    stderr = values.std() / math.sqrt(len(values))
    # unbiased: mean 0 within noise; a V-statistic (diagonal kept) would sit at ~+0.09 here
    assert abs(float(values.mean())) < 3 * float(stderr)
    assert float(stderr) < 0.02


def test_precision_and_recall_count_covered_points():
    torch.manual_seed(0)
    real = torch.cat([torch.randn(200, 2) * 0.1 + 5, torch.randn(200, 2) * 0.1 - 5])
    one_mode = torch.randn(200, 2) * 0.1 + 5  # the model covers one of the two modes
    metric = PrecisionRecall(Features(2), nearest_k=3)
    metric.update(real, real=True)
    metric.update(one_mode, real=False)
    values = metric.compute()
    assert float(values["precision"]) > 0.9
    assert float(values["recall"]) == pytest.approx(0.5, abs=0.05)
    metric.reset()
    metric.update(real, real=True)
    metric.update(real + 100.0, real=False)
    values = metric.compute()
    assert float(values["precision"]) == 0.0 and float(values["recall"]) == 0.0


def test_classifier_is_cached_once_and_its_recorded_accuracy_is_reproducible(tmp_path, monkeypatch):
    spec = ClassifierSpec(cache_dir=str(tmp_path), **SMALL_CLASSIFIER)
    first, record = cached_classifier(Digits(), spec)
    trained = classifier_module.train_classifier

    def refuse(*args, **kwargs):
        raise AssertionError("the cached classifier was retrained")

    monkeypatch.setattr(classifier_module, "train_classifier", refuse)
    again, record_again = cached_classifier(Digits(), spec)
    assert record_again == record
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, _, test = Digits().load_splits()
    _, _, labels = Digits().load_labels()
    fresh = held_out_accuracies(again, test, labels)
    assert fresh["accuracy"] == record["accuracy"]
    assert fresh["accuracy_binarized"] == record["accuracy_binarized"]
    # the same seed trains the same network; other settings are another cache entry
    monkeypatch.setattr(classifier_module, "train_classifier", trained)
    rebuilt = trained(Digits().load_splits()[0], Digits().load_labels()[0], spec)
    assert torch.equal(rebuilt.head.weight, first.head.weight)
    assert ClassifierSpec(**{**SMALL_CLASSIFIER, "seed": 1}).key() != spec.key()


def test_jobs_that_need_the_classifier_at_once_train_it_once(tmp_path, monkeypatch, caplog):
    spec = ClassifierSpec(cache_dir=str(tmp_path), **SMALL_CLASSIFIER)
    trained, calls, jobs, results = classifier_module.train_classifier, [], [], []
    caplog.set_level(logging.INFO, logger=classifier_module.log.name)

    def train_while_another_asks(*args):
        calls.append(args)
        job = threading.Thread(target=lambda: results.append(cached_classifier(Digits(), spec)))
        job.start()  # a second job needs the classifier while this one trains it
        deadline = time.monotonic() + 60
        while "waiting for another process" not in caplog.text:
            assert time.monotonic() < deadline, "the second job never waited for the first"
            time.sleep(0.01)
        jobs.append(job)
        return trained(*args)

    monkeypatch.setattr(classifier_module, "train_classifier", train_while_another_asks)
    first = cached_classifier(Digits(), spec)
    (job,) = jobs
    job.join(timeout=60)
    ((classifier, record),) = results
    assert len(calls) == 1  # trained once, by the first job
    assert record == first[1]  # the second read what the first cached
    assert torch.equal(classifier.head.weight, first[0].head.weight)
    path = spec.path(Digits())
    assert sorted(path.parent.iterdir()) == sorted([path, path.with_suffix(".lock")])  # no .tmp


def test_a_corrupt_cache_file_is_retrained_and_replaced(tmp_path, caplog):
    spec = ClassifierSpec(cache_dir=str(tmp_path), **SMALL_CLASSIFIER)
    path = spec.path(Digits())
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 cut short by a full disk")
    with caplog.at_level(logging.WARNING, logger=classifier_module.__name__):
        _, record = cached_classifier(Digits(), spec)
    assert f"the cached classifier {path} is unreadable" in caplog.text
    assert torch.load(path, weights_only=True)["record"]["accuracy"] == record["accuracy"]


def test_an_unwritable_cache_fails_the_run_before_training_in_one_line(tmp_path, capsys):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    cfg = compose_config(
        [SAMPLE_QUALITY_STAGE, f"sample_quality.classifier.cache_dir={blocker / 'cache'}"]
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        execute(cfg, run_dir, {"posterior": "gaussian"})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: the classifier cache {blocker / 'cache' / 'classifiers'} is not")
    assert "VAE_LAB_CACHE" in err and "\n" not in err
    assert read_metrics(run_dir)["status"] == "failed"
    assert not (run_dir / "checkpoints").exists()  # before any training


def test_a_bad_rendering_is_one_line_before_training(tmp_path, capsys):
    cfg = compose_config([SAMPLE_QUALITY_STAGE, "sample_quality.rendering=grey"])
    with pytest.raises(SystemExit) as exit_info:
        execute(cfg, tmp_path, {})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: sample_quality.rendering=grey is invalid: must be one of mean, sample"


def test_a_run_on_data_without_images_has_no_sample_metrics(tmp_path):
    data = ["data=linear_gaussian", "likelihood=gaussian", "model=linear"]
    execute(compose_config([SAMPLE_QUALITY_STAGE, *data]), tmp_path, {"data": "linear_gaussian"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    assert math.isfinite(metrics["test/log_px"])
    figures = [key for key in metrics if "/time_" not in key]  # the stage ran: its time is kept
    assert not [key for key in figures if "sample" in key or "fid" in key]


@pytest.mark.slow
def test_mnist_classifier_is_accurate(shared_data, tmp_path):
    _, record = cached_classifier(
        IDXImages(root=str(shared_data)), ClassifierSpec(cache_dir=str(tmp_path))
    )
    assert record["accuracy"] >= 0.98 and record["accuracy_binarized"] >= 0.97


def test_a_run_reports_sample_quality_of_reconstructions_and_samples(
    tmp_path, small_classifier_overrides
):
    cfg = compose_config([SAMPLE_QUALITY_STAGE, *small_classifier_overrides])
    execute(cfg, tmp_path, {"prior": "standard", "posterior": "gaussian", "data": "digits"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    for name in ("fid_recon", "fid_samples", "kid_samples", "precision_samples", "recall_samples"):
        assert math.isfinite(metrics[f"test/{name}"]), name
    assert metrics["test/sample_quality_images"] == 359  # the digits' whole test set
    assert 0.9 < metrics["test/classifier_accuracy"] <= 1.0


@pytest.mark.parametrize(
    ("rendering", "grey"), [("mean", True), ("sample", False)], ids=["mean", "sample"]
)
def test_images_are_compared_with_references_of_the_same_rendering(rendering, grey):
    cfg = compose_config([f"sample_quality.rendering={rendering}"])
    datamodule = build_datamodule(cfg)
    datamodule.setup()
    inputs, references, described = instantiate(cfg.sample_quality).test_images(datamodule)
    assert torch.equal(inputs, datamodule.splits[2])  # the encoder sees the binarised images
    binary = bool(((references == 0) | (references == 1)).all())
    assert binary is not grey and ("grey" in described) is grey
    # aligned: each binary test image is a draw from its grey reference
    assert bool(((inputs == 1) <= (references > 0)).all())


@pytest.mark.slow
def test_two_processes_aggregate_the_sample_metrics_over_the_whole_test_set(
    tmp_path, small_classifier_overrides
):
    cfg = compose_config([SAMPLE_QUALITY_STAGE, *small_classifier_overrides, "trainer=ddp_sim",
                          "trainer.enable_progress_bar=false"])  # fmt: skip
    execute(cfg, tmp_path, {"posterior": "gaussian"})
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed", metrics.get("error")
    assert metrics["test/sample_quality_images"] == 359  # each rank scored about half
    assert math.isfinite(metrics["test/fid_samples"])


def test_binarized_mnist_is_scored_by_the_mnist_classifier(tmp_path):
    source = classifier_source(BinarizedMNIST(root=str(tmp_path)))
    assert isinstance(source, IDXImages) and source.name == "mnist"
    assert source.root == str(tmp_path)  # read from the same data root
    assert classifier_source(LinearGaussian(data_dim=4, latent_dim=2)) is None  # no images
