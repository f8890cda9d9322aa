"""Where the configs are.

In a source checkout (and an editable install) ``conf/`` lies beside the package, with the
``experiment`` group a link to the top-level ``experiments/`` folder that researchers edit. A
built package (``pip install .``) carries both inside it, as ``vae_lab/conf/`` and
``vae_lab/conf/experiment/`` (``[tool.setuptools] package-dir`` in pyproject.toml).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CONF_DIR = next(
    (d for d in (PACKAGE.parent / "conf", PACKAGE / "conf") if (d / "config.yaml").is_file()),
    PACKAGE / "conf",
)
