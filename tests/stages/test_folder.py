"""The stage folder: exclusive lock, settings refused even before any shard, checksummed shard
records, temporaries swept, a failed run's new folder removed; and the stages that use it
(encode, score, index build) refusing a second writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from umr_jax import cli
from umr_jax.errors import InputError
from umr_jax.parallel.mesh import make_mesh
from umr_jax.retrieval.encode import EncodeInput, TowerEncoder
from umr_jax.stages.encode import encode_to_store
from umr_jax.stages.folder import LOCK_FILE, RECORDS, FolderLock, StageFolder
from tests.retrieval.towers import make_xlmr_tower, write_demo_tsv

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


# ---- the helper alone -------------------------------------------------------------------------


def test_settings_that_differ_are_refused_even_before_any_shard(tmp_path):
    stage = StageFolder(tmp_path / "out", "encode", settings_file="encode.json")
    with stage.session():
        assert stage.begin({"model": "a", "max_length": 16}) is False
    assert json.loads((tmp_path / "out" / "encode.json").read_text()) == {"model": "a", "max_length": 16}
    assert not list((tmp_path / "out").glob("shard-*"))
    with stage.session():
        with pytest.raises(InputError, match=r"encode.json: this folder holds an earlier encode run with other settings "
                                             r"\(max_length 16 -> 32; model 'a' -> 'b'\)"):
            stage.begin({"model": "b", "max_length": 32})
        assert stage.begin({"model": "a", "max_length": 16}) is True


def test_check_changes_nothing_and_ignored_settings_are_not_compared(tmp_path):
    folder = tmp_path / "out"
    stage = StageFolder(folder, "score", settings_file="s.json", ignore=("name",))
    assert stage.check({"name": "x", "k": 1}) is False and not folder.exists()
    with stage.session():
        stage.begin({"name": "x", "k": 1})
    (folder / ".half-written.tmp").write_bytes(b"a live writer's, perhaps")
    before = sorted(p.name for p in folder.iterdir())
    assert stage.check({"name": "y", "k": 1}) is True  # another name, the same output
    with pytest.raises(InputError, match=r"s.json: .*other settings \(k 1 -> 2\)"):
        stage.check({"name": "y", "k": 2})
    with pytest.raises(InputError, match=r"\(k 1 -> None\)"):  # a setting one side lacks differs, even from None
        stage.check({"name": "x"})
    assert sorted(p.name for p in folder.iterdir()) == before  # no sweep, no write
    assert json.loads((folder / "s.json").read_text()) == {"name": "x", "k": 1}


def test_a_shard_counts_only_with_a_matching_record(tmp_path):
    folder = tmp_path / "out"
    stage = StageFolder(folder, "encode", settings_file="s.json")
    with stage.session():
        stage.begin({"model": "a"})
        (folder / "shard-0.npy").write_bytes(b"embeddings of model a")
        assert not stage.shard_is_recorded("shard-0", ["shard-0.npy"])  # whole, but nothing says who wrote it
        stage.record_shard("shard-0", ["shard-0.npy"])
        assert stage.shard_is_recorded("shard-0", ["shard-0.npy"])
        assert not stage.shard_is_recorded("shard-0", ["shard-0.npy", "shard-0.ids.txt"])
        (folder / "shard-0.npy").write_bytes(b"embeddings of model b")  # same size, other bytes
        assert not stage.shard_is_recorded("shard-0", ["shard-0.npy"])
    other = StageFolder(tmp_path / "other", "encode", settings_file="s.json")
    with other.session():  # a record made under other settings does not count
        other.begin({"model": "b"})
        (tmp_path / "other" / RECORDS).mkdir()
        (tmp_path / "other" / RECORDS / "shard-0.json").write_bytes((folder / RECORDS / "shard-0.json").read_bytes())
        (tmp_path / "other" / "shard-0.npy").write_bytes(b"embeddings of model a")
        assert not other.shard_is_recorded("shard-0", ["shard-0.npy"])


def test_temporaries_are_swept_and_a_failed_new_folder_is_removed(tmp_path):
    folder = tmp_path / "out"
    stage = StageFolder(folder, "index build")
    with pytest.raises(InputError, match="bad input"):
        with stage.session():
            raise InputError("bad input")
    assert not folder.exists()  # this run made it and wrote nothing worth keeping

    folder.mkdir()
    (folder / "keep.txt").write_text("an earlier run's output")
    with pytest.raises(InputError):
        with stage.session():
            raise InputError("bad input")
    assert _files(folder) == {"keep.txt": b"an earlier run's output"}  # an existing folder is never removed

    (folder / ".shard-00002.npy.x1.tmp").write_bytes(b"half-written")
    (folder / ".scann.abc.tmp").mkdir()
    (folder / ".scann.abc.tmp" / "part").write_bytes(b"x")
    with stage.session():
        assert sorted(stage.sweep_temporaries()) == [".scann.abc.tmp", ".shard-00002.npy.x1.tmp"]
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]  # the lock file goes with its release

    kept = StageFolder(tmp_path / "kept", "encode", settings_file="s.json")
    with pytest.raises(RuntimeError):
        with kept.session():
            kept.begin({"a": 1})
            (tmp_path / "kept" / "shard-0").write_bytes(b"1")
            kept.record_shard("shard-0", ["shard-0"])
            raise RuntimeError("killed after a shard")
    assert (tmp_path / "kept" / "shard-0").is_file()  # recorded work stays for the resume


def test_a_held_lock_refuses_a_second_writer_and_names_the_holder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    held = FolderLock(folder, "encode")
    held.acquire()
    try:
        with pytest.raises(InputError, match=rf"{folder}: in use by another run \(encode on host .+ as pid {os.getpid()} since "):
            with StageFolder(folder, "encode").session():
                pass
    finally:
        held.release()
    assert not (folder / LOCK_FILE).exists()
    with StageFolder(folder, "encode").session():  # free again
        assert (folder / LOCK_FILE).is_file()


def test_a_killed_holder_leaves_a_lock_file_the_next_run_takes(tmp_path):
    folder = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom umr_jax.stages.folder import StageFolder\n"
         "with StageFolder(sys.argv[1], 'score').session():\n    print('locked', flush=True)\n    time.sleep(120)\n", str(folder)],
        stdout=subprocess.PIPE, text=True, env=_env())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=rf"in use by another run \(score on host .+ as pid {holder.pid} "):
            with StageFolder(folder, "score").session():
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_FILE).is_file()  # kill -9: no chance to remove it
    with StageFolder(folder, "score").session():  # but the kernel released the lock
        pass


# ---- the stages --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return make_xlmr_tower(root / "a"), make_xlmr_tower(root / "b", seed=1)


@pytest.fixture(scope="module")
def tsv(tmp_path_factory):
    return write_demo_tsv(tmp_path_factory.mktemp("tsv") / "passages.tsv", 60)


def test_encode_refuses_another_model_in_a_folder_still_empty_of_shards(tmp_path, towers, tsv):
    folder = tmp_path / "emb"
    a = TowerEncoder(towers[0], mesh=make_mesh({"data": -1}), dtype="float32")
    b = TowerEncoder(towers[1], mesh=make_mesh({"data": -1}), dtype="float32")

    def stop_at_first_shard(index, entry):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # run A is killed after its settings and one shard
        encode_to_store(a, EncodeInput.passages(tsv), folder, shard_size=20, max_length=16, on_shard_written=stop_at_first_shard)
    for name in ("shard-00000.npy", "shard-00000.ids.txt", f"{RECORDS}/shard-00000.json"):
        (folder / name).unlink()  # ... even before its first shard
    with pytest.raises(InputError, match="the model folder's files changed since"):
        encode_to_store(b, EncodeInput.passages(tsv), folder, shard_size=20, max_length=16)
    report = encode_to_store(a, EncodeInput.passages(tsv), folder, shard_size=20, max_length=16)
    assert (report.encoded_shards, report.skipped_shards) == ([0, 1, 2], [])


def test_a_shard_written_by_another_model_is_encoded_again(tmp_path, towers, tsv):
    """The probe's case: a shard byte-identical to model B's output in model A's folder."""
    a = TowerEncoder(towers[0], mesh=make_mesh({"data": -1}), dtype="float32")
    b = TowerEncoder(towers[1], mesh=make_mesh({"data": -1}), dtype="float32")
    options = dict(shard_size=20, max_length=16)
    encode_to_store(a, EncodeInput.passages(tsv), tmp_path / "a", **options)
    encode_to_store(b, EncodeInput.passages(tsv), tmp_path / "b", **options)
    reference = _files(tmp_path / "a")
    (tmp_path / "a" / "manifest.json").unlink()
    (tmp_path / "a" / "shard-00001.npy").write_bytes((tmp_path / "b" / "shard-00001.npy").read_bytes())
    report = encode_to_store(a, EncodeInput.passages(tsv), tmp_path / "a", **options)
    assert (report.encoded_shards, report.skipped_shards) == ([1], [0, 2])
    assert _files(tmp_path / "a") == reference


def test_two_encodes_into_one_folder_leave_exactly_the_first_ones_output(tmp_path, towers, tsv):
    """Model A and model B started into one folder: B is refused (A's lock, or A's settings when
    A is already done), exit 1 with one line; the folder holds A's output, byte for byte."""
    def command(model, output):
        return [sys.executable, "-m", "umr_jax.cli", "encode", "--model", str(model), "--passages", str(tsv),
                "--output", str(output), "--shard-size", "20", "--max-length", "16", "--dtype", "float32", "--no-progress"]

    alone = subprocess.run(command(towers[0], tmp_path / "alone"), env=_env(), capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    folder = tmp_path / "emb"
    first = subprocess.Popen(command(towers[0], folder), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen(command(towers[1], folder), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (_, err_first), (_, err_second) = first.communicate(timeout=300), second.communicate(timeout=300)
    outcomes = sorted([(first.returncode, err_first), (second.returncode, err_second)], key=lambda o: o[0])
    assert [code for code, _ in outcomes] == [0, 1], (err_first[-2000:], err_second[-2000:])
    refusal = outcomes[1][1].strip().splitlines()[-1]
    assert refusal.startswith(f"umr-jax encode: error: {folder}") and "Traceback" not in outcomes[1][1]
    assert "in use by another run (encode on host" in refusal or "the model folder's files changed since" in refusal
    winner = towers[0] if first.returncode == 0 else towers[1]
    expected = alone if winner == towers[0] else subprocess.run(
        command(towers[1], tmp_path / "alone_b"), env=_env(), capture_output=True, text=True, timeout=300)
    reference = tmp_path / ("alone" if winner == towers[0] else "alone_b")
    assert expected.returncode == 0
    assert {k: v for k, v in _files(folder).items() if k not in ("encode.json", "manifest.json")} == \
           {k: v for k, v in _files(reference).items() if k not in ("encode.json", "manifest.json")}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["encode"]["model"] == str(Path(winner).absolute())
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_index_build_into_a_locked_folder_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    matrix = tmp_path / "emb.npy"
    np.save(matrix, np.eye(4, dtype=np.float32))
    folder = tmp_path / "index"
    folder.mkdir()
    held = FolderLock(folder, "index build")
    held.acquire()
    try:
        assert cli.main(["index", "build", "--embeddings", str(matrix), "--backend", "exact", "--output", str(folder)]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"umr-jax index: error: {folder}: in use by another run (index build on host" in err
    finally:
        held.release()
    assert list(folder.iterdir()) == []
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((2, 4), np.nan, np.float32))
    assert cli.main(["index", "build", "--embeddings", str(bad), "--backend", "exact", "--output", str(tmp_path / "new")]) == 1
    assert not (tmp_path / "new").exists()
    assert cli.main(["index", "build", "--embeddings", str(matrix), "--backend", "exact", "--output", str(tmp_path / "new")]) == 0
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == ["index.json"]
