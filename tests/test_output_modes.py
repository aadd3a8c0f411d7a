"""Outputs written through a temporary file or folder get the modes that open() and mkdir() give
under the process umask (0o644 and 0o755 under 0o022), not mkstemp's 0o600 and mkdtemp's 0o700,
so other users of a shared machine can read them. Each case runs under two umasks, so a mode
read once at import time, or a fixed mode, would fail one of them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from umr_jax.data import files
from umr_jax.demo import make_demo
from umr_jax.evaluation import report
from umr_jax.retrieval.index import Index
from umr_jax.stages.index import build_index

from tests.retrieval.towers import make_xlmr_tower


@pytest.fixture(params=[0o022, 0o027], ids=["umask-022", "umask-027"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _modes_under(folder: Path) -> dict[str, int]:
    """{relative path: mode} of `folder` (as ".") and everything in it."""
    modes = {".": _mode(folder)}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            modes[str(path.relative_to(folder))] = _mode(path)
    return modes


def _expected(folder: Path, mask: int) -> dict[str, int]:
    return {rel: (0o777 if rel == "." or (folder / rel).is_dir() else 0o666) & ~mask for rel in _modes_under(folder)}


def test_umask_is_read_now(umask):
    assert files.umask() == umask
    assert (files.output_file_mode(), files.output_dir_mode()) == (0o666 & ~umask, 0o777 & ~umask)


def test_atomic_file_gets_the_mode_of_an_ordinary_file(tmp_path, umask):
    with files.AtomicFile(tmp_path / "shard-00000-of-00001.jsonl") as f:
        f.write(b"{}\n")
    (tmp_path / "ordinary.txt").write_bytes(b"")
    assert _mode(tmp_path / "shard-00000-of-00001.jsonl") == _mode(tmp_path / "ordinary.txt") == 0o666 & ~umask
    assert _mode(tmp_path / "shard-00000-of-00001.jsonl") == {0o022: 0o644, 0o027: 0o640}[umask]


def test_output_temp_dir_gets_the_mode_of_an_ordinary_folder(tmp_path, umask):
    made = files.make_output_temp_dir(tmp_path, prefix=".out.")
    (tmp_path / "ordinary").mkdir()
    assert made.parent == tmp_path and made.name.startswith(".out.")
    assert _mode(made) == _mode(tmp_path / "ordinary") == {0o022: 0o755, 0o027: 0o750}[umask]


def test_evaluation_report_mode(tmp_path, umask):
    report.write_report(tmp_path / "eval.json", {"r@2kt": {"ja": 50.0, "average": 50.0}})
    assert json.loads((tmp_path / "eval.json").read_text())["r@2kt"]["ja"] == 50.0
    assert _mode(tmp_path / "eval.json") == 0o666 & ~umask
    assert sorted(os.listdir(tmp_path)) == ["eval.json"]


def test_demo_files_mode(tmp_path, umask):
    make_demo._write(tmp_path / "models" / "spiece.model", b"x")
    assert (tmp_path / "models" / "spiece.model").read_bytes() == b"x"
    assert _mode(tmp_path / "models" / "spiece.model") == 0o666 & ~umask


def test_exported_model_folder_and_files_modes(tmp_path, umask):
    folder = make_xlmr_tower(tmp_path / "best" / "query_encoder")
    modes = _modes_under(folder)
    assert {"model.safetensors", "config.json", "tokenizer.json", "modules.json"} <= set(modes)
    assert modes == _expected(folder, umask)
    assert modes["."] == {0o022: 0o755, 0o027: 0o750}[umask]
    assert modes["model.safetensors"] == {0o022: 0o644, 0o027: 0o640}[umask]


def test_scann_index_folder_modes(tmp_path, umask):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "m.npy", rng.standard_normal((64, 8)).astype(np.float32))
    index = build_index(tmp_path / "m.npy", tmp_path / "index", backend="scann", k=4)
    assert Index.open(index).search(rng.standard_normal((2, 8)).astype(np.float32), 4)[0].shape == (2, 4)
    scann = index / "scann"
    assert _modes_under(scann) == _expected(scann, umask)
    assert _mode(scann) == {0o022: 0o755, 0o027: 0o750}[umask]
