"""Speed benchmarks of vae_lab (``make bench``): ratios against references run in the same
process, never absolute timings.

Every benchmark uses the MNIST model of the IWAE papers (784-200-200-50 MLP, diagonal Gaussian
q, N(0, I) prior, Bernoulli likelihood, batch 100) on real MNIST, built from the real Hydra
config, and compares it with a reference doing the same work:

    training  one epoch through the VAE LightningModule and Trainer vs a bare PyTorch loop
    iw        the batched, chunked IW estimate of log p(x) vs per-datapoint loops, and the
              decoder's achieved FLOP/s vs ``torch.matmul`` on the same shapes
    memory    peak memory of the K = 5000 estimate vs K = 500
    qstar     q* fitted to many datapoints at once vs one datapoint at a time
    ais       AIS throughput in datapoint-chain-steps per second

``benchmarks.run`` runs them, prints a table and writes ``bench.json``.

The package imports vae_lab before any module of it loads torch: vae_lab sets how long OpenMP's
idle threads spin (``GOMP_SPINCOUNT``, read once, when torch loads OpenMP), and a benchmark
must time the threads a run has. Loaded first, torch kept libgomp's own spin, under which a
job alone steps faster than a run (docs/speed.md, "Jobs that share the cores").
"""

import vae_lab  # noqa: F401  (first: see above)
