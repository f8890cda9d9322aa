"""The CUDA path: the numbers of a GPU equal a CPU's, a run resumed on a GPU equals an
uninterrupted one, and DDP and bf16 training run. Marked ``gpu``; skipped where torch sees no
CUDA device (``benchmarks/device_check.sh`` runs them on one).

CUDA's random generator is not the CPU's, so the sampled test metrics of one checkpoint on the
two devices are two independent Monte Carlo estimates: they agree within their standard errors.
What no draw enters (the analytic KL, the log-weights of given noise) agrees to float tolerance.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from tests.conftest import SHRINK, checkpoint_model, compose_config
from tests.test_distributed import TEST_METRICS, _test_metrics
from tests.test_records import csv_rows, run_cli
from vae_lab.estimators.elbo import reparameterize
from vae_lab.records.outputs import read_metrics
from vae_lab.run import execute

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
#: after the suite's SHRINK, which puts runs on the CPU
GPU = ["trainer=gpu", "trainer.accelerator=gpu", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> str:
    """A checkpoint of a shrunk digits run, trained on the GPU."""
    run_dir = tmp_path_factory.mktemp("train")
    assert execute(compose_config(GPU), run_dir, {})["status"] == "completed"
    return str(run_dir / "checkpoints" / "last.ckpt")


def test_draw_free_quantities_on_cuda_equal_the_cpus(ckpt):
    """Given the same noise, the log-weights of every posterior's hot path agree to float
    tolerance between the devices, and so does the analytic KL."""
    cfg = compose_config()
    model, datamodule = checkpoint_model(cfg, ckpt)
    x = torch.bernoulli(datamodule.splits[2][:50], generator=torch.Generator().manual_seed(0))
    eps = torch.randn(7, 50, cfg.latent_dim, generator=torch.Generator().manual_seed(1))

    def on(device: str) -> tuple[torch.Tensor, torch.Tensor]:
        net, data = model.to(device), x.to(device)
        with torch.no_grad():
            q = net.q(data)
            reparam = reparameterize(q)
            z, log_det = reparam.push_forward(eps.to(device))
            log_q = reparam.noise.log_prob(eps.to(device)) - log_det
            log_w = net.log_likelihood(data)(z) + net.p_z().log_prob(z) - log_q
            kl = torch.distributions.kl_divergence(q, net.p_z())
        return log_w.cpu(), kl.cpu()

    (w_cpu, kl_cpu), (w_gpu, kl_gpu) = on("cpu"), on("cuda")
    torch.testing.assert_close(w_gpu, w_cpu, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl_gpu, kl_cpu, rtol=1e-5, atol=1e-5)


def test_test_metrics_on_cuda_equal_the_cpus_within_their_errors(ckpt, tmp_path):
    cpu = _test_metrics([], ckpt, tmp_path / "cpu")
    gpu = _test_metrics(GPU, ckpt, tmp_path / "gpu")
    assert set(gpu) == set(TEST_METRICS)
    assert gpu["test/kl"] == pytest.approx(cpu["test/kl"], rel=1e-5)  # analytic: no draws
    se = (cpu["test/log_px_stderr"] ** 2 + gpu["test/log_px_stderr"] ** 2) ** 0.5
    assert abs(gpu["test/log_px"] - cpu["test/log_px"]) < 4 * se
    assert gpu["test/active_units"] == cpu["test/active_units"]


def test_evaluation_on_cuda_ignores_the_training_precision(ckpt, tmp_path):
    full = _test_metrics(GPU, ckpt, tmp_path / "full")
    mixed = _test_metrics([*GPU, "trainer.precision=bf16-mixed"], ckpt, tmp_path / "mixed")
    for key in TEST_METRICS:
        assert mixed[key] == pytest.approx(full[key], rel=1e-6), key


@pytest.mark.parametrize(
    "trainer", [["trainer=ddp", "trainer.accelerator=gpu"], [*GPU, "trainer.precision=bf16-mixed"]]
)
def test_ddp_and_bf16_training_run_on_cuda(trainer, tmp_path):
    result = run_cli(*SHRINK, *trainer, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "completed"
    for key in ("test/log_px", "test/elbo"):
        assert math.isfinite(metrics[key]), key


def test_sigterm_then_resume_on_cuda_equals_an_uninterrupted_run(tmp_path):
    """As tests/test_records.py on the CPU: the checkpoint carries CUDA's RNG state, so the
    resumed run draws what the uninterrupted one drew."""
    base = [*SHRINK, *GPU, "trainer.max_epochs=4",
            "trainer.log_every_n_steps=1", "trainer.deterministic=true", "logger=csv"]  # fmt: skip
    env = {"CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8")}
    straight = run_cli(*base, f"hydra.run.dir={tmp_path / 'straight'}", **env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    folder = tmp_path / "resumed"
    stopped = run_cli(*base, "+fault=sigterm", "callbacks.fault.at_step=7",
                      f"hydra.run.dir={folder}", **env)  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    resumed = run_cli(f"resume={folder}", **env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ours, theirs = read_metrics(folder), read_metrics(tmp_path / "straight")
    for key in ("test/log_px", "test/elbo", "test/kl", "val/elbo", "train/loss"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-6, abs=1e-6), key
    assert [(r["epoch"], r["step"]) for r in csv_rows(folder)] == [
        (r["epoch"], r["step"]) for r in csv_rows(tmp_path / "straight")
    ]
