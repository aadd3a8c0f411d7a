"""The path layer (`umr_jax.storage`) against a real Cloud Storage API (the emulator of
tests/cloud/conftest.py): downloads into the mirror, uploads on commit, removals, the lock object,
and the output checks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pytest

from umr_jax import storage
from umr_jax.data.files import AtomicFile, ShardedWriter, TextSink, expand_shards
from umr_jax.errors import InputError, JobFailed
from umr_jax.outputs import check_output, removed_on_failure
from umr_jax.stages.folder import StageFolder


def test_local_and_url_are_inverse(bucket):
    path = storage.local(f"{bucket.url}/runs/emb/")
    assert path == storage.mirror_root() / "gs" / bucket.name / "runs" / "emb"
    assert storage.url_of(path) == f"{bucket.url}/runs/emb"
    assert storage.url_of(path.parent.parent.parent) is None or "/" in storage.url_of(path.parent)
    assert storage.local("runs/emb") == storage.Path("runs/emb") and storage.url_of("runs/emb") is None
    # a URL that went through pathlib once (`Path("gs://b/x")` is `gs:/b/x`) is still one
    assert storage.is_remote(str(storage.Path(f"{bucket.url}/x"))) and not storage.is_remote("gs_dir/x")


def test_fetch_file_folder_and_shard_set_only_when_stale(bucket, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("alpha")
    (tmp_path / "src" / "sub").mkdir()
    (tmp_path / "src" / "sub" / "b.txt").write_text("beta")
    bucket.put(tmp_path / "src", "data/folder")
    for i in range(3):
        (tmp_path / f"part-{i:05d}-of-00003.jsonl").write_text(json.dumps({"i": i}) + "\n")
        bucket.put(tmp_path / f"part-{i:05d}-of-00003.jsonl", f"data/part-{i:05d}-of-00003.jsonl")

    folder = storage.fetch(f"{bucket.url}/data/folder")
    assert (folder / "a.txt").read_text() == "alpha" and (folder / "sub" / "b.txt").read_text() == "beta"
    assert storage.sync_down(folder) == 0  # fresh: nothing downloaded again
    (tmp_path / "src" / "a.txt").write_text("alpha, changed")
    bucket.put(tmp_path / "src" / "a.txt", "data/folder/a.txt")
    assert storage.sync_down(folder) == 1 and (folder / "a.txt").read_text() == "alpha, changed"

    shards = expand_shards(f"{bucket.url}/data/part.jsonl")  # a shard set, read through the mirror
    assert [json.loads(p.read_text())["i"] for p in shards] == [0, 1, 2]
    with pytest.raises(InputError, match=rf"^gs://{bucket.name}/data/missing.jsonl: no such file"):
        expand_shards(f"{bucket.url}/data/missing.jsonl")  # named by its URL, not the mirror path


def test_what_another_host_writes_after_a_listing_is_seen(bucket):
    # Another host (here the Cloud Storage client, not our file system) writes into a folder this
    # process listed a moment ago: a cached listing would say the new object does not exist.
    from google.cloud import storage as gcs

    other_host = gcs.Client().bucket(bucket.name)
    other_host.blob("emb/records/a.json").upload_from_string("{}")
    folder = storage.fetch(f"{bucket.url}/emb")
    assert sorted(p.name for p in folder.rglob("*.json")) == ["a.json"]
    other_host.blob("emb/encode.json").upload_from_string('{"shard_size": 30}')
    other_host.blob("emb/records/b.json").upload_from_string("{}")
    assert json.loads(storage.fetch(f"{bucket.url}/emb/encode.json").read_text()) == {"shard_size": 30}
    assert storage.exists(folder / "records" / "b.json")
    assert sorted(p.name for p in storage.fetch(f"{bucket.url}/emb").rglob("*.json")) == ["a.json", "b.json", "encode.json"]


class Lines(TextSink):
    def write(self, record: str) -> None:
        self.text.write(record + "\n")


def test_fetch_skips_named_sub_folders_at_any_depth(bucket, tmp_path):
    for key in ("run/config.json", "run/checkpoints/3/state", "run/iter0/train/checkpoints/1/state",
                "run/iter0/embeddings/shard-00000.npy", "run/iter0/eval.json"):
        (tmp_path / "f").write_text(key)
        bucket.put(tmp_path / "f", key)
    folder = storage.fetch(f"{bucket.url}/run", skip=("checkpoints", "embeddings"))
    got = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert got == ["config.json", "iter0/eval.json"]


def test_committed_files_reach_the_bucket_before_commit_returns(bucket):
    target = storage.local(f"{bucket.url}/out/result.json")
    with AtomicFile(target) as f:
        f.write(b'{"ok": 1}')
    assert bucket.read("out/result.json") == b'{"ok": 1}'
    with ShardedWriter(f"{bucket.url}/out/records.jsonl", Lines, num_shards=2) as w:
        for i in range(4):
            w.write(json.dumps({"i": i}))
    assert bucket.keys("out") == ["out/records-00000-of-00002.jsonl", "out/records-00001-of-00002.jsonl", "out/result.json"]
    # a rewrite with another shard count replaces the old set in the bucket too
    with ShardedWriter(f"{bucket.url}/out/records.jsonl", Lines, num_shards=3) as w:
        w.write(json.dumps({"i": 0}))
    assert [k for k in bucket.keys("out") if "records" in k] == [f"out/records-0000{i}-of-00003.jsonl" for i in range(3)]
    assert not [k for k in bucket.keys() if k.endswith(".tmp")]


def test_a_failed_run_removes_only_what_it_added_never_the_bucket_above(bucket, tmp_path):
    (tmp_path / "keep.txt").write_text("an earlier run's")
    bucket.put(tmp_path / "keep.txt", "runs/old/keep.txt")  # a sibling folder of the output
    bucket.put(tmp_path / "keep.txt", "runs/out/earlier.txt")  # already in the output folder
    with pytest.raises(RuntimeError):
        with removed_on_failure(f"{bucket.url}/runs/out"):
            with AtomicFile(storage.local(f"{bucket.url}/runs/out/new.txt")) as f:
                f.write(b"this run's")
            assert "runs/out/new.txt" in bucket.keys()
            raise RuntimeError("the run fails")
    assert bucket.keys() == ["runs/old/keep.txt", "runs/out/earlier.txt"]

    with pytest.raises(RuntimeError):  # an output that did not exist: removed, and nothing above it
        with removed_on_failure(f"{bucket.url}/runs/fresh"):
            with AtomicFile(storage.local(f"{bucket.url}/runs/fresh/x.txt")) as f:
                f.write(b"x")
            raise RuntimeError("the run fails")
    assert bucket.keys() == ["runs/old/keep.txt", "runs/out/earlier.txt"]


def test_output_checks_name_the_url(bucket, tmp_path):
    with pytest.raises(InputError, match=r"^gs://no-such-bucket-umr/x: bucket not found"):
        check_output("gs://no-such-bucket-umr/x", "folder")
    (tmp_path / "f.txt").write_text("x")
    bucket.put(tmp_path / "f.txt", "a/file")
    with pytest.raises(InputError, match=rf"^gs://{bucket.name}/a/file: exists and is an object, not a folder"):
        check_output(f"{bucket.url}/a/file", "folder")
    check_output(f"{bucket.url}/a/new-folder", "folder")  # a new folder in an existing bucket is fine


def test_a_holder_that_was_taken_over_stops_before_writing(bucket):
    """A run whose lock another run took over (after it stalled past the TTL) stops at its next
    upload with one line: nothing of it reaches the folder, and the new holder's lock stays."""
    from google.cloud import storage as gcs

    folder = StageFolder(f"{bucket.url}/stage", "encode")
    with pytest.raises(JobFailed, match=rf"^gs://{bucket.name}/stage: another run took over this folder's lock"):
        with folder.session():
            with AtomicFile(folder.path / "before.txt") as f:
                f.write(b"while the lock is ours")
            assert bucket.keys("stage") == ["stage/.umr-jax.lock", "stage/before.txt"]
            taken = {"stage": "encode", "host": "other-host", "pid": 7, "heartbeat": time.time()}
            gcs.Client().bucket(bucket.name).blob("stage/.umr-jax.lock").upload_from_string(json.dumps(taken))
            with AtomicFile(folder.path / "after.txt") as f:
                f.write(b"after the takeover")
    assert "stage/after.txt" not in bucket.keys("stage")
    assert json.loads(bucket.read("stage/.umr-jax.lock"))["host"] == "other-host"  # not released by the old holder
    assert storage._HELD == {}


def test_the_lock_object_refuses_a_second_writer_and_expires_with_a_dead_one(bucket, monkeypatch):
    first = StageFolder(f"{bucket.url}/stage", "encode")
    with first.session():
        assert ".umr-jax.lock" in [k.rsplit("/", 1)[-1] for k in bucket.keys("stage")]
        second = storage.RemoteLock(f"{bucket.url}/stage", "encode")
        with pytest.raises(InputError, match=rf"^gs://{bucket.name}/stage: in use by another run \(encode on host "):
            second.acquire()
    assert bucket.keys("stage") == []  # released: the object is gone

    # A holder that died (no heartbeat for longer than the TTL) is taken over.
    monkeypatch.setenv("UMR_JAX_REMOTE_LOCK_TTL", "5")
    bucket.fs().pipe_file(f"{bucket.name}/stage/.umr-jax.lock",
                          json.dumps({"host": "dead-host", "pid": 1, "heartbeat": time.time() - 60}).encode())
    lock = storage.RemoteLock(f"{bucket.url}/stage", "encode")
    lock.acquire()
    holder = json.loads(bucket.read("stage/.umr-jax.lock"))
    assert holder["pid"] == os.getpid()
    lock.release()

    # A fresh heartbeat from a process of this host that no longer exists (kill -9): taken over at once.
    dead = subprocess.Popen(["true"])
    dead.wait()
    bucket.fs().pipe_file(f"{bucket.name}/stage/.umr-jax.lock",
                          json.dumps({"host": socket.gethostname(), "pid": dead.pid, "heartbeat": time.time()}).encode())
    lock = storage.RemoteLock(f"{bucket.url}/stage", "encode")
    lock.acquire()
    assert json.loads(bucket.read("stage/.umr-jax.lock"))["pid"] == os.getpid()
    lock.release()
    # ... but one of another host is live until its heartbeat is older than the TTL.
    bucket.fs().pipe_file(f"{bucket.name}/stage/.umr-jax.lock",
                          json.dumps({"host": "other-host", "pid": dead.pid, "heartbeat": time.time()}).encode())
    with pytest.raises(InputError, match="in use by another run"):
        storage.RemoteLock(f"{bucket.url}/stage", "encode").acquire()
