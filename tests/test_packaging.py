"""The package list of pyproject.toml: a built install (``pip install .``) carries every
subpackage of vae_lab, since the list is written out (the configs are mapped into it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
REPO = Path(__file__).resolve().parents[1]


def setuptools_table() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def package_folder(package: str, package_dir: dict[str, str]) -> Path:
    """The folder a listed package is built from: its mapped one, else its module path."""
    return REPO / package_dir.get(package, package.replace(".", "/"))


def test_every_subpackage_is_in_the_package_list() -> None:
    listed = set(setuptools_table()["packages"])
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "vae_lab").rglob("__init__.py")
    }
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"


def test_every_listed_package_is_a_folder() -> None:
    table = setuptools_table()
    missing = [
        package
        for package in table["packages"]
        if not package_folder(package, table.get("package-dir", {})).is_dir()
    ]
    assert not missing, f"remove from [tool.setuptools] packages: {missing}"


@pytest.mark.slow
def test_the_wheel_carries_every_module_and_config(tmp_path) -> None:
    """Built from a copy of the sources, so that the build leaves nothing in the checkout."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__")
    for name in ("vae_lab", "conf", "experiments"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), "."],
        check=True, cwd=source, timeout=600,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("vae_lab-*.whl")
    inside = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        path.relative_to(REPO).as_posix()
        for path in (REPO / "vae_lab").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    configs = {  # conf/experiment, a link to experiments/, is mapped on its own
        f"vae_lab/conf/{path.relative_to(REPO / 'conf').as_posix()}"
        for path in (REPO / "conf").rglob("*.yaml")
        if path.relative_to(REPO / "conf").parts[0] != "experiment"
    } | {f"vae_lab/conf/experiment/{path.name}" for path in (REPO / "experiments").glob("*.yaml")}
    assert not (modules | configs) - inside, sorted((modules | configs) - inside)
