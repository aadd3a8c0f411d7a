"""The stages run end to end with every input and output in Cloud Storage (the emulator of
tests/cloud/conftest.py), through the real CLI, from a folder that is not the checkout:
encode -> index build -> retrieve -> score -> evaluate. The outputs equal a run on local paths
byte for byte, and a rerun on a machine with an empty mirror (the mirror deleted) resumes from
what reached the bucket instead of redoing it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED

ROOT = Path(__file__).resolve().parents[2]


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "umr_jax.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    paths = demo_paths()
    formats.write_dpr_passages(folder / "passages.tsv", list(formats.read_dpr_passages(paths["passages"]))[:96])
    formats.write_questions(folder / "dev.jsonl", list(formats.read_questions(paths["dev_questions"]))[:6])
    return folder


def stage_commands(passages: str, questions: str, out: str) -> list[list[str]]:
    retriever, scorer = str(PRETRAINED / "retriever"), str(PRETRAINED / "scorer")
    return [
        ["encode", "--model", retriever, "--passages", passages, "--output", f"{out}/emb", "--shard-size", "32",
         "--batch-size", "32", "--dtype", "float32", "--no-progress"],
        ["index", "build", "--embeddings", f"{out}/emb", "--backend", "exact", "--output", f"{out}/index"],
        ["retrieve", "--model", retriever, "--index", f"{out}/index", "--queries", questions, "--passages", passages,
         "--top-k", "4", "--dtype", "float32", "--output", f"{out}/run.jsonl"],
        ["score", "--model", scorer, "--run", f"{out}/run.jsonl", "--output", f"{out}/labels", "--top-k", "4",
         "--dtype", "float32", "--questions-per-chunk", "2", "--no-progress"],
        ["evaluate", "xor-retrieve", "--gold", questions, "--json", "--tokenizer", "nltk-line", "--output", f"{out}/eval.json",
         "--run", f"{out}/run.jsonl"],
    ]


@pytest.mark.slow
def test_stages_read_and_write_gs_and_equal_a_local_run(bucket, inputs, tmp_path):
    elsewhere = tmp_path / "elsewhere"  # not the checkout: nothing may depend on the current folder
    elsewhere.mkdir()
    passages = bucket.put(inputs / "passages.tsv", "data/passages.tsv")
    questions = bucket.put(inputs / "dev.jsonl", "data/dev.jsonl")
    out = f"{bucket.url}/runs/it0"
    for command in stage_commands(passages, questions, out):
        ok(cli(elsewhere, *command))
    for command in stage_commands(str(inputs / "passages.tsv"), str(inputs / "dev.jsonl"), str(tmp_path / "local")):
        ok(cli(elsewhere, *command))

    keys = bucket.keys("runs/it0")
    assert "runs/it0/emb/manifest.json" in keys and "runs/it0/labels/manifest.json" in keys
    assert "runs/it0/index/index.json" in keys and "runs/it0/run.jsonl" in keys
    assert not [k for k in keys if k.endswith(".tmp") or k.endswith(".umr-jax.lock")]
    local = tmp_path / "local"
    for key in keys:  # every stage's output equals the local run's, byte for byte
        relative = key[len("runs/it0/"):]
        if relative == "index/index.json":  # names its embeddings by where they are
            meta = json.loads(bucket.read(key))
            assert meta["embeddings"] == f"{out}/emb"
            continue
        if relative.endswith(".json") and not relative.startswith("index/"):
            continue  # settings naming the input (a URL here, a path there), timing, counters: compared below
        assert bucket.read(key) == (local / relative).read_bytes(), relative
    settings = json.loads(bucket.read("runs/it0/emb/encode.json"))
    assert settings["input"] == passages  # recorded by its URL: a resume on any machine matches
    assert settings == {**json.loads((local / "emb" / "encode.json").read_text()), "input": passages,
                        "input_files": settings["input_files"]}  # sizes and times: the object's time there
    labels = [r for r in formats.read_retrieval(f"{out}/labels/pseudo_labels.jsonl")]
    assert [[c.score for c in r.ctxs] for r in labels] == \
        [[c.score for c in r.ctxs] for r in formats.read_retrieval(local / "labels" / "pseudo_labels.jsonl")]
    assert json.loads(bucket.read("runs/it0/eval.json"))["r@2kt"] == json.loads((local / "eval.json").read_text())["r@2kt"]

    # A new machine: no mirror. The same commands find every stage finished in the bucket.
    shutil.rmtree(os.environ["UMR_JAX_MIRROR"])
    done = ok(cli(elsewhere, *stage_commands(passages, questions, out)[0]))
    assert "encoded 0 shards (0 passages), 3 already done" in done.stderr, done.stderr
