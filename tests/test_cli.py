"""The `umr-jax` command line: every sub-command of the design is there."""

from __future__ import annotations

import json
import subprocess
import sys


from umr_jax import __version__, cli
from tests.models.hf_reference import make_bert

DESIGN_COMMANDS = ["demo", "data", "encode", "index", "retrieve", "score", "train", "loop", "evaluate", "scaling", "model", "compile"]


def test_help_lists_every_sub_command():
    out = subprocess.run([sys.executable, "-m", "umr_jax.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for name in DESIGN_COMMANDS:
        assert f"    {name}" in out, name
    assert set(cli.BUILT) == set(DESIGN_COMMANDS)


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "usage: umr-jax" in capsys.readouterr().out


def test_model_inspect(tmp_path, capsys):
    make_bert(tmp_path / "bert")
    assert cli.main(["model", "inspect", str(tmp_path / "bert"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "bert"
    assert report["config"]["num_hidden_layers"] == 3
    # 100 x 32 words + 64 x 32 positions + 2 x 32 types + 2 x 32 norm + 3 layers + pooler
    layer = 3 * (32 * 32 + 32) + (32 * 32 + 32) + 2 * 32 + (32 * 48 + 48) + (48 * 32 + 32) + 2 * 32
    assert report["parameters"] == 100 * 32 + 64 * 32 + 2 * 32 + 2 * 32 + 3 * layer + (32 * 32 + 32)


def test_model_inspect_bad_folder_is_one_line_error(tmp_path, capsys):
    assert cli.main(["model", "inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"umr-jax model: error: {tmp_path}: no config.json; a Hugging Face model folder is expected"


def test_version():
    out = subprocess.run([sys.executable, "-m", "umr_jax.cli", "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"umr-jax {__version__}"


def test_unusable_compilation_cache_is_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["--compilation-cache", str(blocker / "xla"), "model", "inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "compilation cache" in err and str(blocker / "xla") in err and "Traceback" not in err
