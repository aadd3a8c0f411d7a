"""The encode stage: resumable byte for byte, settings refused naming what differs, JSON lines
and TSV give the same shards, hosts split the shards and process 0 writes the manifest, the
command's errors are one line, and the compilation cache is reused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import jax
import numpy as np
import pytest

from umr_jax import cli
from umr_jax.data import formats
from umr_jax.errors import InputError
from umr_jax.parallel.mesh import make_mesh
from umr_jax.retrieval.embeddings import EmbeddingStore
from umr_jax.retrieval.encode import EncodeInput, TowerEncoder, shard_rows
from umr_jax.stages.encode import encode_to_store, owned_shards, shard_owner
from tests.multiprocess import finish_all, launch_processes
from tests.retrieval.towers import demo_passages, write_demo_tsv, encoder8, xlmr_folder  # noqa: F401 (fixtures)




@pytest.fixture(scope="module")
def tsv_100(tmp_path_factory):
    return write_demo_tsv(tmp_path_factory.mktemp("tsv") / "passages.tsv", 100)


class Crash(Exception):
    pass


class CountingProgress:
    def __init__(self):
        self.total, self.rows = "unset", 0

    def start(self, total):
        self.total = total

    def advance(self, rows):
        self.rows += rows


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_resume_after_a_crash_is_byte_identical(tmp_path, encoder8, tsv_100):
    source = EncodeInput.passages(tsv_100)
    options = dict(shard_size=30, batch_size=16, max_length=32)
    straight = encode_to_store(encoder8, source, tmp_path / "straight", **options)
    assert (straight.num_shards, straight.total_rows, straight.encoded_shards) == (4, 100, [0, 1, 2, 3])
    assert shard_rows(100, 30) == [30, 30, 30, 10]

    def crash_after_shard_1(index, entry):
        if index == 1:
            raise Crash

    with pytest.raises(Crash):
        encode_to_store(encoder8, source, tmp_path / "resumed", on_shard_written=crash_after_shard_1, **options)
    killed = tmp_path / "resumed"
    assert sorted(p.name for p in killed.glob("shard-*")) == [f"shard-0000{i}.{ext}" for i in (0, 1) for ext in ("ids.txt", "npy")]
    with pytest.raises(InputError, match="no manifest.json"):
        EmbeddingStore.open(killed)
    # A kill between a shard's two files leaves embeddings without ids: that shard is redone.
    (killed / "shard-00001.ids.txt").unlink()
    (killed / ".shard-00002.npy.x1.tmp").write_bytes(b"half-written")  # what a kill mid-write leaves

    progress = CountingProgress()
    resumed = encode_to_store(encoder8, source, killed, progress=progress, **options)
    assert (resumed.skipped_shards, resumed.encoded_shards) == ([0], [1, 2, 3])
    assert progress.total == progress.rows == 70
    assert _files(killed) == _files(tmp_path / "straight")
    manifest = json.loads((killed / "manifest.json").read_text())
    assert manifest["encode"]["max_length"] == 32 and manifest["encode"]["model"] == str(encoder8.folder.absolute())
    assert manifest["total_rows"] == 100 and manifest["dtype"] == "float16"
    matrices, ids = zip(*EmbeddingStore.open(killed).iter_shards())
    assert sum(ids, []) == [p.id for p in demo_passages(100)]
    np.testing.assert_allclose(np.concatenate(matrices).astype(np.float32),
                               encoder8.encode_records(demo_passages(100), max_length=32)[0], atol=2e-3)


def test_resume_with_other_settings_is_refused(tmp_path, xlmr_folder, encoder8, tsv_100):
    tsv = tmp_path / "passages.tsv"
    tsv.write_bytes(tsv_100.read_bytes())
    source = EncodeInput.passages(tsv)
    folder = tmp_path / "emb"
    encode_to_store(encoder8, source, folder, shard_size=50, max_length=16)
    again = encode_to_store(encoder8, source, folder, shard_size=50, max_length=16)
    assert (again.encoded_shards, again.skipped_shards, again.manifest) == ([], [0, 1], True)
    with pytest.raises(InputError, match=r"encode.json: .*other settings \(max_length 16 -> 32\)"):
        encode_to_store(encoder8, source, folder, shard_size=50, max_length=32)
    with pytest.raises(InputError, match=r"output_dtype 'float16' -> 'float32'; shard_size 50 -> 40"):
        encode_to_store(encoder8, source, folder, shard_size=40, max_length=16, output_dtype="float32")
    cls = TowerEncoder(xlmr_folder, mesh=make_mesh({"data": -1}), pooling="cls", dtype="float32")
    with pytest.raises(InputError, match=r"pooling 'mean' -> 'cls'"):
        encode_to_store(cls, source, folder, shard_size=50, max_length=16)
    os.utime(tsv, ns=(0, 0))
    with pytest.raises(InputError, match="the input file changed since"):
        encode_to_store(encoder8, source, folder, shard_size=50, max_length=16)
    (folder / "encode.json").unlink()
    with pytest.raises(InputError, match="no encode.json"):
        encode_to_store(encoder8, source, folder, shard_size=50, max_length=16)


def test_jsonl_input_streams_to_the_same_shards_as_tsv(tmp_path, encoder8, tsv_100):
    formats.write_passages_jsonl(tmp_path / "passages.jsonl", demo_passages(100))
    options = dict(shard_size=40, batch_size=16, max_length=16)
    tsv = encode_to_store(encoder8, EncodeInput.passages(tsv_100), tmp_path / "a", **options)
    jsonl = encode_to_store(encoder8, EncodeInput.passages(tmp_path / "passages.jsonl"), tmp_path / "b", **options)
    assert (tsv.num_shards, jsonl.num_shards, jsonl.total_rows) == (3, 3, 100)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] == b[name] for name in a if name.startswith("shard-"))


def test_shard_assignment_covers_every_shard_once():
    for count in (1, 2, 3, 5):
        for num_shards in (0, 1, 4, 11):
            parts = [owned_shards(num_shards, p, count) for p in range(count)]
            assert sorted(sum(parts, [])) == list(range(num_shards))
            assert all(shard_owner(i, count) == p for p, part in enumerate(parts) for i in part)
    assert owned_shards(7, 1, 3) == [1, 4]


def test_two_processes_split_the_shards_and_process_0_writes_the_manifest(tmp_path, xlmr_folder, tsv_100):
    """Two hosts simulated by two threads, each with its own encoder on its own 4 devices,
    joined by a real barrier; the result equals one host with 4 devices, byte for byte."""
    source = EncodeInput.passages(tsv_100)
    options = dict(shard_size=30, batch_size=16, max_length=16)
    hosts = [TowerEncoder(xlmr_folder, mesh=make_mesh({"data": -1}, jax.devices()[4 * i : 4 * i + 4]), dtype="float32") for i in (0, 1)]
    encode_to_store(hosts[0], source, tmp_path / "one", **options)
    gate = threading.Barrier(2, timeout=120)
    calls: list[tuple[int, str]] = []
    reports, errors = {}, []

    def host(index, encoder):
        def barrier(name):
            calls.append((index, name))
            gate.wait()

        try:
            reports[index] = encode_to_store(encoder, source, tmp_path / "two", process_index=index, process_count=2,
                                             barrier=barrier, **options)
        except BaseException as err:  # surfaced below
            errors.append(err)
            gate.abort()

    thread = threading.Thread(target=host, args=(1, hosts[1]))
    thread.start()
    host(0, hosts[0])
    thread.join()
    assert not errors, errors
    assert (reports[0].encoded_shards, reports[1].encoded_shards) == ([0, 2], [1, 3])
    assert (reports[0].manifest, reports[1].manifest) == (True, False)
    assert sorted(name for _, name in calls) == ["umr-jax-encode-done"] * 2 + ["umr-jax-encode-start"] * 2
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


@pytest.mark.slow
def test_two_jax_processes_equal_one(tmp_path, xlmr_folder, tsv_100):
    def command(output, *extra):
        return [sys.executable, "-m", "umr_jax.cli", "encode", "--model", str(xlmr_folder), "--passages", str(tsv_100),
                "--output", str(output), "--shard-size", "30", "--max-length", "16", "--dtype", "float32",
                "--no-progress", *extra]

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    single = subprocess.run(command(tmp_path / "one"), env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    outputs = finish_all(launch_processes(command(tmp_path / "two"), env=env), timeout=300)
    for rc, _, err in outputs:
        assert rc == 0, err[-3000:]
    assert "process 0/2: encoded 2 shards (60 passages" in outputs[0][2]
    assert "process 1/2: encoded 2 shards (40 passages" in outputs[1][2]
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def test_bad_input_is_a_one_line_error(tmp_path, xlmr_folder, tsv_100, capsys):
    def error(*argv) -> str:
        assert cli.main(["encode", *argv, "--output", str(tmp_path / "out"), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    missing = tmp_path / "no-model"
    assert error("--model", str(missing), "--passages", str(tsv_100)) == (
        f"umr-jax encode: error: {missing}: no such model folder; expected a Hugging Face model folder or a model ID "
        "(org/name[@revision])")
    bad_tsv = tmp_path / "bad.tsv"
    bad_tsv.write_text("id\ttext\ttitle\n1\tsome text\tA title\n2\tonly two columns\n")
    assert error("--model", str(xlmr_folder), "--passages", str(bad_tsv)).endswith(
        f"{bad_tsv}:3: expected 3 tab-separated columns (id, text, title), got 2")
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"id": "1", "title": "t", "text": "x"}\n{"id": "2", "title": "t"}\n')
    assert error("--model", str(xlmr_folder), "--passages", str(bad_jsonl)).endswith(f"{bad_jsonl}:2: missing field 'text'; expected {{id, title, text}}")
    bad_questions = tmp_path / "q.jsonl"
    bad_questions.write_text('{"id": "q1", "question": "Wer?", "lang": "xx"}\n')
    assert f"{bad_questions}:1: unknown language code 'xx'" in error("--model", str(xlmr_folder), "--queries", str(bad_questions))
    assert "--mesh 'data=3'" in error("--model", str(xlmr_folder), "--passages", str(tsv_100), "--mesh", "data=3")
    assert error("--model", str(xlmr_folder), "--passages", str(tsv_100), "--shard-size", "0").endswith("--shard-size must be at least 1, got 0")
    assert not list(tmp_path.glob("out/shard-*"))  # no run got as far as writing embeddings


def test_compilation_cache_is_filled_then_reused(tmp_path, xlmr_folder, tsv_100):
    """`umr-jax --compilation-cache DIR`: the first run writes XLA's programs there, a second
    process compiles nothing new (the cache gains no entry) and writes the same bytes."""
    cache = tmp_path / "xla"

    def run(output):
        command = [sys.executable, "-m", "umr_jax.cli", "--compilation-cache", str(cache), "encode", "--model",
                   str(xlmr_folder), "--passages", str(tsv_100), "--output", str(output), "--shard-size", "50",
                   "--max-length", "16", "--dtype", "float32", "--no-progress"]
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu",
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return sorted(p.name for p in cache.iterdir())

    first = run(tmp_path / "one")
    assert first, "nothing was written to the compilation cache"
    assert run(tmp_path / "two") == first
    assert _files(tmp_path / "two") == _files(tmp_path / "one")
