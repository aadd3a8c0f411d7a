"""What the wheel carries: every package under umr_jax/, the demo's data and models, and the
top-level configs/ as `umr_jax.configs`, so `--config NAME` works from a wheel install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import setuptools

REPO = Path(__file__).resolve().parents[1]


def test_the_package_list_names_every_package_and_maps_configs():
    """setuptools' discovery does not follow package-dir, so pyproject lists the packages: a new
    subpackage missing from the list would be missing from the wheel."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert tool["package-dir"] == {"umr_jax.configs": "configs"}
    found = setuptools.find_packages(where=str(REPO), include=["umr_jax*"])
    assert sorted(tool["packages"]) == sorted([*found, "umr_jax.configs"])
    assert (REPO / "configs" / "__init__.py").is_file()


def test_a_wheel_install_loads_configs_by_name_from_any_folder(tmp_path):
    source = _mkdir(tmp_path / "source")  # a copy: building leaves build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.idx")
    shutil.copytree(REPO / "umr_jax", source / "umr_jax", ignore=ignore)
    shutil.copytree(REPO / "configs", source / "configs", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", str(source), "-w", str(tmp_path / "wheels"), "--no-deps", "--no-build-isolation"],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "wheels").glob("umr_jax-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (REPO / "configs").glob("*.py"):
        assert f"umr_jax/configs/{config.name}" in names, config.name
    assert "umr_jax/demo/pretrained/scorer/config.json" in names and "umr_jax/demo/corpus/passages.tsv" in names

    subprocess.run([*pip, "install", "--no-deps", "--target", str(tmp_path / "site"), str(wheel)], check=True,
                   capture_output=True, timeout=600)
    elsewhere = _mkdir(tmp_path / "elsewhere")
    script = ("import umr_jax; from umr_jax.config import config_names, load_config; c = load_config('demo').loop; "
              "print(umr_jax.__file__); print(c.scorer); print(' '.join(config_names()))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    module, scorer, names = proc.stdout.splitlines()
    site = str(tmp_path / "site")
    assert module.startswith(site) and scorer == f"{site}/umr_jax/demo/pretrained/scorer"
    assert "umr_xor_loop" in names.split() and "webfaq_scaling" in names.split()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
