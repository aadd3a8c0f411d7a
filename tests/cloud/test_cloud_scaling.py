"""A scaling study with its data, its starting model and its study folder in Cloud Storage (the
emulator of tests/cloud/conftest.py), run from a folder that is not the checkout: every point's
result, the baseline and the report land in the bucket, and a rerun on a new machine (an empty
mirror) finds every point finished there and trains nothing."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.scaling.test_runner import study_data  # noqa: F401  (a fixture)
from tests.training.conftest import tiny_retriever  # noqa: F401  (a fixture)
from umr_jax import cli
from umr_jax.config import load_config
from umr_jax.scaling import runner


@pytest.mark.slow
def test_scaling_study_in_a_bucket(bucket, study_data, tiny_retriever, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    data = {name: bucket.put(study_data / name, f"data/{name}") for name in ("pairs.jsonl", "passages.tsv", "dev.jsonl")}
    model = bucket.put(tiny_retriever, "models/tiny")
    study = f"{bucket.url}/studies/s1"
    overrides = [
        f"model.init={model}", "model.query_max_length=16", "model.passage_max_length=32",
        "scaling.sources=translated", "scaling.min_size=10", "scaling.bootstrap_samples=50",
        "train.batch_size=8", "train.epochs=1", f"sources.translated.data.path={data['pairs.jsonl']}",
        f"evaluation.passages={data['passages.tsv']}", f"evaluation.questions={data['dev.jsonl']}",
        f"evaluation.gold={data['dev.jsonl']}", "evaluation.top_k=20", "evaluation.batch_size=64",
    ]
    assert cli.main(["scaling", "--config", "demo_scaling", "--output", study, *overrides]) == 0
    assert "| translated | 3 (10-40) |" in capsys.readouterr().out

    keys = bucket.keys("studies/s1")
    results = sorted(k for k in keys if k.endswith("/result.json"))
    assert results == [f"studies/s1/points/translated/size-{n:010d}/result.json" for n in (10, 30, 40)]
    assert {"studies/s1/report/scaling.json", "studies/s1/report/scaling.png", "studies/s1/report/scaling.md",
            "studies/s1/baseline/eval.json", "studies/s1/plan.json"} <= set(keys)
    assert not [k for k in keys if k.endswith(".tmp") or k.endswith(".umr-jax.lock")]
    report = json.loads(bucket.read("studies/s1/report/scaling.json"))
    assert report["baseline"] == pytest.approx(json.loads(bucket.read("studies/s1/baseline/eval.json"))["r@5kt"]["average"])
    for key in results:
        record = json.loads(bucket.read(key))
        assert record["metrics"]["train"]["examples"] in (10, 30, 40)

    shutil.rmtree(os.environ["UMR_JAX_MIRROR"])  # a new machine: only the bucket remains
    stages: list[str] = []
    again = runner.run_scaling(load_config("demo_scaling", overrides), study, on_stage=stages.append)
    assert stages == [] and len(again["points"]) == 3
