"""`umr-jax loop` as two JAX processes (2 CPU devices each, joined over 127.0.0.1) equals one
process with the same 4 devices: the same shards, passages, rankings and R@kt, and embeddings,
scores and the trained retriever that agree to float rounding (each host encodes on its own
2 devices, and the gradients are summed across processes in another order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.multiprocess import launch, launch_processes, wait_ok
from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = demo_paths()
    folder = tmp_path_factory.mktemp("corpus")
    formats.write_dpr_passages(folder / "passages.tsv", list(formats.read_dpr_passages(p["passages"]))[:400])
    formats.write_questions(folder / "train.jsonl", list(formats.read_questions(p["train_questions"]))[:64])
    formats.write_questions(folder / "dev.jsonl", list(formats.read_questions(p["dev_questions"]))[:24])
    return folder


def _loop(output: Path, corpus: Path, cache: Path, *processes: str) -> list[subprocess.Popen]:
    overrides = [f"loop.retriever={PRETRAINED / 'retriever'}", f"loop.scorer={PRETRAINED / 'scorer'}",
                 f"loop.passages={corpus / 'passages.tsv'}", f"loop.train_questions={corpus / 'train.jsonl'}",
                 f"loop.dev_questions={corpus / 'dev.jsonl'}", f"loop.eval_gold={corpus / 'dev.jsonl'}", "loop.top_k=16",
                 "score.top_k=8", "data.top_k=8", "train.questions_per_batch=8"]
    command = [sys.executable, "-m", "umr_jax.cli", "--compilation-cache", str(cache), "loop", "--config",
               str(ROOT / "configs" / "demo.py"), "--iterations", "1", "--output", str(output), "--json", *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count="
               + ("4" if not processes else "2"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    if not processes:
        return [launch(command, env=env)]
    return launch_processes(command, process_ids=processes, env=env)


def _wait(procs: list[subprocess.Popen]) -> list[str]:
    return wait_ok(procs, timeout=900)


def _labels(folder: Path) -> list[tuple[str, list[str], np.ndarray]]:
    return [(r.id, [c.id for c in r.ctxs], np.array([c.score for c in r.ctxs])) for r in
            formats.read_retrieval(folder / "pseudo_labels.jsonl")]


@pytest.mark.slow
def test_a_two_process_loop_equals_one_process(tmp_path, corpus):
    cache = tmp_path / "xla"
    one, two = tmp_path / "one", tmp_path / "two"
    _wait(_loop(one, corpus, cache))
    # --json: one JSON object on stdout (after the lines Gloo's C++ writes there when processes join)
    printed = [json.loads([line for line in out.splitlines() if line.startswith("{")][-1])["iterations"]
               for out in _wait(_loop(two, corpus, cache, "0", "1"))]
    assert len(printed[0]) == 2 and printed[1] == printed[0]  # every process prints the same history (one entry per iteration)

    # Each host encodes on its own 2 devices, the single process on 4: the same rows, batched
    # differently, so embeddings and retrieval scores agree to float rounding, not to the bit.
    manifests = [json.loads((run / "iter0" / "embeddings" / "manifest.json").read_text()) for run in (one, two)]
    assert manifests[0]["shards"] == manifests[1]["shards"] and manifests[0]["total_rows"] == manifests[1]["total_rows"]
    for shard in sorted((one / "iter0" / "embeddings").glob("shard-*.npy")):
        np.testing.assert_allclose(np.load(shard), np.load(two / "iter0" / "embeddings" / shard.name), rtol=0, atol=1e-5)
        assert shard.with_suffix(".ids.txt").read_bytes() == (two / "iter0" / "embeddings" / shard.name).with_suffix(".ids.txt").read_bytes()
    for name in ("retrieved_train.jsonl", "retrieved_dev.jsonl"):
        results = [list(formats.read_retrieval(run / "iter0" / name)) for run in (one, two)]
        for a, b in zip(*results, strict=True):
            assert (a.id, [c.id for c in a.ctxs]) == (b.id, [c.id for c in b.ctxs]), name
            np.testing.assert_allclose([c.score for c in a.ctxs], [c.score for c in b.ctxs], rtol=0, atol=1e-4)
    assert json.loads((one / "iter0" / "eval.json").read_text()) == json.loads((two / "iter0" / "eval.json").read_text())
    for split in ("pseudo_labels", "dev_pseudo_labels"):
        for (qa, pa, sa), (qb, pb, sb) in zip(_labels(one / "iter0" / split), _labels(two / "iter0" / split), strict=True):
            assert (qa, pa) == (qb, pb)
            np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-5)

    done = [json.loads((run / "iter0" / "train" / "DONE.json").read_text()) for run in (one, two)]
    assert done[0]["summary"]["steps"] == done[1]["summary"]["steps"] > 0
    towers = [Path(d["retriever"]["query"]) for d in done]
    assert towers[1] == two / towers[0].relative_to(one)
    a, b = (load_file(str(t / "model.safetensors")) for t in towers)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=2e-5, err_msg=key)
    history = [json.loads((run / "history.json").read_text()) for run in (one, two)]
    for record_one, record_two in zip(history[0], history[1], strict=True):
        for k in ("r@2kt", "r@5kt"):
            assert abs(record_one["eval"][k]["average"] - record_two["eval"][k]["average"]) <= 1.0, k
