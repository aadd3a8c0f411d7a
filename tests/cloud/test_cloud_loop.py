"""`umr-jax loop` with everything in Cloud Storage (the emulator of tests/cloud/conftest.py):
models, passages and questions read from gs://, every stage's output, the Orbax checkpoints and
the exports written there. The run is killed (SIGKILL) while training, after a checkpoint reached
the bucket; the mirror is then deleted (a new machine) and the same command resumes from the
bucket. The result equals an uninterrupted local run's: retrieval files and trained weights byte
for byte."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_kill_resume import LOOP_OVERRIDES
from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED

ROOT = Path(__file__).resolve().parents[2]
# The small one-iteration loop of the kill -9 tests (every step checkpointed and kept).
OVERRIDES = LOOP_OVERRIDES
CHECKPOINT = re.compile(r"iter0/train/checkpoints/(\d+)/commit_success")


def command(cache: Path, output: str, inputs: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "umr_jax.cli", "--compilation-cache", str(cache), "loop", "--config", "demo",
            "--iterations", "1", "--output", output, "--quiet",
            f"loop.retriever={inputs['retriever']}", f"loop.scorer={inputs['scorer']}", f"loop.passages={inputs['passages']}",
            f"loop.train_questions={inputs['train']}", f"loop.dev_questions={inputs['dev']}",
            f"loop.eval_gold={inputs['dev']}", *OVERRIDES]


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.mark.slow
def test_loop_in_a_bucket_killed_and_resumed_on_a_new_machine_equals_a_local_run(bucket, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cache = tmp_path / "xla-cache"
    data = tmp_path / "data"
    data.mkdir()
    paths = demo_paths()
    formats.write_dpr_passages(data / "passages.tsv", list(formats.read_dpr_passages(paths["passages"]))[:240])
    formats.write_questions(data / "train.jsonl", list(formats.read_questions(paths["train_questions"]))[:48])
    formats.write_questions(data / "dev.jsonl", list(formats.read_questions(paths["dev_questions"]))[:8])
    local_inputs = {"retriever": str(PRETRAINED / "retriever"), "scorer": str(PRETRAINED / "scorer"),
                    "passages": str(data / "passages.tsv"), "train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl")}
    remote_inputs = {"retriever": bucket.put(PRETRAINED / "retriever", "models/retriever"),
                     "scorer": bucket.put(PRETRAINED / "scorer", "models/scorer"),
                     **{k: bucket.put(Path(local_inputs[k]), f"data/{Path(local_inputs[k]).name}") for k in ("passages", "train", "dev")}}

    reference = subprocess.run(command(cache, str(tmp_path / "local-run"), local_inputs), cwd=elsewhere, env=env(),
                               capture_output=True, text=True, timeout=900)
    assert reference.returncode == 0, reference.stderr[-3000:]

    out = f"{bucket.url}/run"
    log = open(tmp_path / "remote.log", "wb")
    process = subprocess.Popen(command(cache, out, remote_inputs), cwd=elsewhere, env=env(), stdout=log, stderr=subprocess.STDOUT)
    deadline, killed_at = time.time() + 900, None
    while time.time() < deadline and process.poll() is None:
        steps = [int(m[1]) for k in bucket.keys("run/iter0/train/checkpoints") if (m := CHECKPOINT.search(k))]
        if steps and max(steps) >= 2:
            process.send_signal(signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.2)
    process.wait(timeout=60)
    assert killed_at is not None, "the run ended before a second checkpoint reached the bucket: " + \
        (tmp_path / "remote.log").read_text(errors="replace")[-2000:]
    assert "run/iter0/train/DONE.json" not in bucket.keys("run")

    shutil.rmtree(os.environ["UMR_JAX_MIRROR"])  # a new machine: only the bucket remains
    resumed = subprocess.run(command(cache, out, remote_inputs), cwd=elsewhere, env=env(), capture_output=True, text=True,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    keys = bucket.keys("run")
    assert not [k for k in keys if k.endswith(".tmp") or k.endswith(".umr-jax.lock")]
    local = tmp_path / "local-run"
    for name in ("iter0/retrieved_train.jsonl", "iter0/retrieved_dev.jsonl", "iter1/retrieved_dev.jsonl",
                 "iter0/train/best/query_encoder/model.safetensors", "iter0/train/best/passage_encoder/model.safetensors",
                 "iter0/train/final/query_encoder/model.safetensors", "iter0/train/final/passage_encoder/model.safetensors"):
        assert bucket.read(f"run/{name}") == (local / name).read_bytes(), name
    steps = [json.loads(line)["step"] for line in bucket.read("run/iter0/train/metrics.jsonl").decode().splitlines()
             if json.loads(line).get("split") == "train"]
    assert steps == sorted(set(steps)) and steps[0] == 1  # every step once, across the kill
    assert json.loads(bucket.read("run/iter1/eval.json")) == json.loads((local / "iter1" / "eval.json").read_text()) or \
        json.loads(bucket.read("run/iter1/eval.json"))["r@2kt"] == json.loads((local / "iter1" / "eval.json").read_text())["r@2kt"]
    assert any(k.startswith("run/iter0/train/tensorboard/") for k in keys)
