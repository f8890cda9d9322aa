"""Subnormal floats flushed to zero: in every thread of a job's pool, and without changing a
training step's numbers where the step makes subnormals."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from tests.conftest import compose_config, one_thread
from vae_lab.model.module import VAE
from vae_lab.training.build import build_datamodule
from vae_lab.training.subnormals import SMALLEST_NORMAL, flush_subnormals

pytestmark = pytest.mark.skipif(not flush_subnormals(), reason="this CPU cannot flush subnormals")

#: use_threads in a fresh process (what it says, then the check), then the same check with the
#: main thread's mode undone
IN_A_FRESH_PROCESS = """
import torch
from vae_lab.training.subnormals import subnormals_flushed
from vae_lab.training.threads import use_threads
print(use_threads(2))
print(subnormals_flushed(2))
torch.set_flush_denormal(False)
print(subnormals_flushed(2))
"""


def test_every_thread_of_a_job_flushes_and_the_check_sees_one_that_does_not():
    out = subprocess.run([sys.executable, "-c", IN_A_FRESH_PROCESS], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert out.stdout.split() == ["True", "True", "False"]


def subnormals(t: torch.Tensor) -> int:
    return int(((t != 0) & (t.abs() < SMALLEST_NORMAL)).sum())


def train_steps(flush: bool, steps: int = 3) -> tuple[list[torch.Tensor], int]:
    """A model's parameters after ``steps`` Adam steps from a decoder whose logits are all -88
    (sigmoid(-88), about 6e-39, is subnormal), with the main thread's flush mode set to
    ``flush`` (one thread: all the arithmetic is the main thread's); and how many subnormals the
    output bias's first gradient held."""
    cfg = compose_config()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.setup()
    x = datamodule.splits[0][:32]
    torch.manual_seed(0)
    model = VAE.from_config(cfg, datamodule.data_dim, datamodule.image_shape)
    output = [m for m in model.decoder.modules() if isinstance(m, nn.Linear)][-1]
    nn.init.zeros_(output.weight)
    nn.init.constant_(output.bias, -88.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.set_flush_denormal(flush)
    try:
        first = None
        for step in range(steps):
            optimizer.zero_grad()
            model.objective.loss(model, x, step).loss.backward()
            first = subnormals(output.bias.grad) if first is None else first
            optimizer.step()
    finally:
        flush_subnormals()
    return [p.detach().clone() for p in model.parameters()], first


def test_flushing_changes_no_number_of_a_step_that_makes_subnormals():
    with one_thread():
        kept, made = train_steps(flush=False)
        flushed, left = train_steps(flush=True)
    assert made > 0 and left == 0  # the unflushed step made subnormals; the flushed one none
    for a, b in zip(kept, flushed, strict=True):  # within an ulp or two of weights up to 0.6
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
