"""Config files and their overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from umr_jax.config import config_names, load_config
from umr_jax.errors import InputError

CONFIG = '''
import ml_collections

def get_config(arg="base"):
    c = ml_collections.ConfigDict()
    c.name = arg
    c.mesh = dict(data=-1, fsdp=2, model=1)
    c.train = dict(batch_size=16, learning_rate=2e-5)
    return c
'''


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "exp.py"
    path.write_text(CONFIG)
    return path


def test_load_and_override(config_file):
    c = load_config(config_file, ["train.batch_size=64", "train.learning_rate=1e-4", "mesh.fsdp=4", "name=big"])
    assert c.train.batch_size == 64 and c.train.learning_rate == 1e-4 and c.mesh.fsdp == 4 and c.name == "big"
    assert load_config(f"{config_file}:small").name == "small"


def test_unknown_override_key_is_an_error(config_file):
    with pytest.raises(InputError, match=r"exp\.py: override 'train.batchsize=3': config has no key 'train.batchsize'"):
        load_config(config_file, ["train.batchsize=3"])
    with pytest.raises(InputError, match="must look like key=value"):
        load_config(config_file, ["train.batch_size"])


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.py")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config():\n    return 1 / 0\n")
    with pytest.raises(InputError, match="ZeroDivisionError"):
        load_config(broken)


# ---- configs shipped with the package, by name ------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
PACKAGED = ["demo", "demo_scaling", "translated_pairs", "umr_xor_retrieve", "umr_xor_retrieve_loop", "webfaq_scaling"]


def _umr_jax(cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "umr_jax.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_every_packaged_config_loads_by_name_and_equals_its_file():
    assert config_names() == sorted([*PACKAGED, "umr_xor_loop"])
    for name in PACKAGED:
        by_name = load_config(name)
        assert by_name.to_dict() == load_config(f"{name}.py").to_dict() == load_config(REPO / "configs" / f"{name}.py").to_dict()
    assert load_config("umr_xor_loop").to_dict() == load_config("umr_xor_retrieve_loop").to_dict()
    assert load_config("umr_xor_loop", ["train.epochs=3"]).train.epochs == 3


def test_a_packaged_config_takes_its_argument():
    study = load_config("demo_scaling:/elsewhere/demo")
    assert study.sources.umr.data.pseudo_labels == "/elsewhere/demo/iter0/pseudo_labels/pseudo_labels.jsonl"


def test_an_existing_file_shadows_a_packaged_name(tmp_path, monkeypatch):
    (tmp_path / "demo.py").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    assert load_config("demo.py:local").name == "local"
    assert "loop" in load_config("demo")  # no file named "demo" here: the packaged one


def test_unknown_names_and_missing_paths_list_the_packaged_configs():
    with pytest.raises(InputError, match=r"^umr_xor: no config file of that name here and no packaged config 'umr_xor'; "
                                         r"give a config file path or one of: demo, demo_scaling, .*webfaq_scaling$"):
        load_config("umr_xor")
    with pytest.raises(InputError, match=r"^configs/nope\.py: config file not found; .*\(demo, demo_scaling, "):
        load_config("configs/nope.py:arg")


def test_the_demo_config_resolves_its_files_through_the_package_from_any_folder(tmp_path):
    """Run from a folder outside the checkout: the shipped models and the embedded corpus are
    found through the installed package, and the paths are absolute (not the current folder's)."""
    script = ("import json; from umr_jax.config import load_config; c = load_config('demo').loop; "
              "print(json.dumps({k: c[k] for k in ('scorer', 'retriever', 'passages', 'train_questions', 'dev_questions')}))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    paths = json.loads(proc.stdout)
    for key, path in paths.items():
        assert Path(path).is_absolute() and Path(path).exists(), (key, path)
    assert (Path(paths["scorer"]) / "config.json").is_file() and (Path(paths["retriever"]) / "config.json").is_file()


def test_the_scaling_dry_run_reads_the_demo_study_by_name_from_any_folder(tmp_path):
    proc = _umr_jax(tmp_path, "scaling", "--config", "demo_scaling", "--output", str(tmp_path / "study"), "--dry-run",
                    "scaling.sources=webfaq,translated", "sources.webfaq.data.stratify=True",
                    "sources.translated.data.languages=xor")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("  webfaq       contrastive on WebFAQ: every language but English, shares equal, monolingual (a question and "
            "its answer); size in pairs") in proc.stdout.splitlines()
    assert ("  translated   contrastive on pairs file: XOR-TyDi's 7 (those the source has), shares as in the source, "
            "cross-lingual; size in pairs") in proc.stdout.splitlines()
    row = next(line for line in proc.stdout.splitlines() if "translated   n=   420" in line)
    assert "6 points (0 finished):" in proc.stdout and row.endswith("to train") and row.split()[3] == "39"  # steps


@pytest.mark.parametrize("command", [["train"], ["loop"], ["scaling", "--output", "study"], ["compile", "--topology", "v5e-16"]])
def test_every_command_with_a_config_takes_a_name(tmp_path, command):
    """A name is resolved by every command that takes --config: an override of a key the config
    lacks is refused naming the packaged config (the config was found and loaded), and an
    unknown name is one line listing the names."""
    proc = _umr_jax(tmp_path, command[0], "--config", "umr_xor_loop", *command[1:], "no_such.key=1")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip() == (f"umr-jax {command[0]}: error: umr_xor_retrieve_loop: override 'no_such.key=1': "
                                   "config has no key 'no_such.key'")
    proc = _umr_jax(tmp_path, command[0], "--config", "umr_xor", *command[1:])
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "no packaged config 'umr_xor'" in proc.stderr and "umr_xor_retrieve_loop" in proc.stderr


def test_help_lists_the_packaged_configs():
    for argv in (["--help"], ["loop", "--help"], ["compile", "--help"]):
        out = " ".join(_umr_jax(REPO, *argv).stdout.split())
        assert "demo, demo_scaling, translated_pairs, umr_xor_loop, umr_xor_retrieve, umr_xor_retrieve_loop, webfaq_scaling" in out, argv
