"""``python -m vae_lab.report DIR... [--out DIR]``: aggregate runs into a report.

Reads every ``metrics.json`` under the folders (a sweep still running or partly failed is
fine) and writes into ``--out``, by default the first folder:

* ``report.md``: per configuration, mean ± sd over seeds (``n = 1`` for one seed) of
  test/elbo, test/log_px, test/inference_gap and, where ``vae_lab.evaluate`` has run, the
  approximation and amortization gaps; bits/dim where the likelihood is of grey levels
  (test/bits_per_dim, and eval/bits_per_dim, the twin of evaluate's best log p(x)); the mean
  stderr of log p(x) and PSIS k-hat; the count of runs; failed runs with their errors; plots;
  each run's images;
* ``report.csv``: one row per run;
* ``gaps.png`` (the gap decomposition), ``log_px.png`` (log p(x) per posterior x prior) and,
  from the runs' ``csv/metrics.csv``, ``training_curves.png``.

``write.write_report`` does it in Python. The package itself imports nothing, so that the sweep
summary (``summary.py``, a Hydra callback of every run) does not load matplotlib.
"""
