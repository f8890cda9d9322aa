"""Load a trained run and use its model from Python (docs/python_api.md).

    python examples/load_run.py [RUN_DIR] [--grid PATH]

Without RUN_DIR a run of a few seconds is trained first (``python -m vae_lab.run debug=fast``,
on scikit-learn's digits) into a temporary folder. Then: samples of the model, q(z|x) of a few
test images, log p(x) of five test images with its stderr, and the samples as an image grid.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import vae_lab
from vae_lab.components.images import save_image_grid


def train_short_run(run_dir: Path) -> None:
    """A run of a few seconds into ``run_dir``; its output is shown only if it fails."""
    command = [sys.executable, "-m", "vae_lab.run", "debug=fast", f"hydra.run.dir={run_dir}"]
    print("training:", " ".join(command[1:]))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the run failed:\n{done.stdout}{done.stderr}")


def show(run_dir: Path, grid: Path) -> None:
    run = vae_lab.load(run_dir)
    model, test = run.model, run.datamodule.splits[2]  # the splits: [N, X] tensors
    print(f"run {run.run_dir}: test/log_px = {run.metrics.get('test/log_px')} (metrics.json)")
    torch.manual_seed(0)

    samples = model.sample(16)  # E[x|z], z ~ p(z): [16, X], flat as the data
    print("samples:", tuple(samples.shape))

    q = model.encode(test[:3])  # q(z|x), a torch Distribution over z [3, D]
    z = q.sample((1000,))  # draws: every posterior family has them (a flow has no closed-form mean)
    for name, values in (("mean", z.mean(0)), ("stddev", z.std(0))):
        print(f"q(z|x) {name}, first image:", " ".join(f"{v:.2f}" for v in values[0, :4]), "...")

    estimate = model.log_px(test[:5], num_samples=100)  # per image, with its Monte Carlo variance
    for value, stderr in zip(estimate.value, estimate.variance.sqrt(), strict=True):
        print(f"log p(x) = {value:.2f} ± {stderr:.2f}")
    figure = estimate.figure()
    print(f"mean over the 5 images: {figure.value:.2f} ± {figure.stderr:.2f}")

    shape = run.datamodule.image_shape
    if len(shape) == 2:  # images, not vectors (data=linear_gaussian)
        save_image_grid(samples.reshape(-1, *shape).cpu(), grid)
        print("sample grid:", grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run folder (default: train one)")
    parser.add_argument("--grid", type=Path, default=Path("samples.png"), help="the sample grid")
    args = parser.parse_args()
    if args.run_dir is not None:
        show(args.run_dir, args.grid)
        return
    with tempfile.TemporaryDirectory() as folder:
        train_short_run(Path(folder) / "run")
        show(Path(folder) / "run", args.grid)


if __name__ == "__main__":
    main()
