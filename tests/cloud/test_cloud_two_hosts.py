"""Two JAX processes that share nothing but the bucket, as two TPU VM hosts do: each has a local
mirror of its own (`UMR_JAX_MIRROR`), and `umr-jax encode` writes one gs:// folder from both. Each
host uploads the shards it owns, process 0 checks every shard (downloading the other host's) and
writes the manifest: the bucket then holds what one local process writes, byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.multiprocess import failures, finish_all, free_port, join_flags, launch
from tests.retrieval.towers import write_demo_tsv, xlmr_folder  # noqa: F401 (a fixture)


@pytest.mark.slow
def test_two_hosts_encode_into_one_bucket_folder(bucket, tmp_path, xlmr_folder):  # noqa: F811
    tsv = write_demo_tsv(tmp_path / "passages.tsv", 100)
    passages = bucket.put(tsv, "data/passages.tsv")

    def command(passages_path, output):
        return [sys.executable, "-m", "umr_jax.cli", "encode", "--model", str(xlmr_folder), "--passages", passages_path,
                "--output", output, "--shard-size", "30", "--max-length", "16", "--dtype", "float32", "--no-progress"]

    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    single = subprocess.run(command(str(tsv), str(tmp_path / "one")), env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]

    port = free_port()
    procs = [launch([*command(passages, f"{bucket.url}/emb"), *join_flags(port, i)],
                    env=dict(env, UMR_JAX_MIRROR=str(tmp_path / f"host{i}-mirror")), cwd=tmp_path)
             for i in range(2)]
    outputs = finish_all(procs, timeout=600)  # the slow set compiles TPU programs beside it
    assert all(rc == 0 for rc, _, _ in outputs), failures(outputs, 3000)
    assert "process 0/2: encoded 2 shards (60 passages" in outputs[0][2]
    assert "process 1/2: encoded 2 shards (40 passages" in outputs[1][2]

    one = tmp_path / "one"
    for name in sorted(p.name for p in one.iterdir() if p.name.startswith("shard-")):
        assert bucket.read(f"emb/{name}") == (one / name).read_bytes(), name
    assert "emb/manifest.json" in bucket.keys("emb")
    # host 1 never held host 0's shards: its mirror has only its own (and what it read)
    host1 = tmp_path / "host1-mirror" / "gs" / bucket.name / "emb"
    assert sorted(p.name for p in host1.glob("shard-*.npy")) == ["shard-00001.npy", "shard-00003.npy"]
