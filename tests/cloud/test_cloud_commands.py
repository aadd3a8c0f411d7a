"""The smaller commands with gs:// inputs and outputs, in this process, from a folder that is not
the checkout (the emulator of tests/cloud/conftest.py): `model inspect` a model folder in a bucket,
`data convert` into a bucket (shards too), `index build/search` with every path in the bucket,
and one-line errors that name the URL."""

from __future__ import annotations

import json

import numpy as np

from umr_jax import cli
from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED


def test_model_inspect_a_bucket_folder(bucket, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = bucket.put(PRETRAINED / "retriever", "models/retriever")
    assert cli.main(["model", "inspect", url, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["family"] in ("bert", "xlm-roberta") and described["parameters"] > 0
    assert cli.main(["model", "inspect", f"{bucket.url}/models/none"]) == 1
    assert capsys.readouterr().err.strip().endswith(f"{bucket.url}/models/none: no config.json there; expected a "
                                                    "Hugging Face model folder (config.json, weights, tokenizer)")


def test_data_convert_into_a_bucket(bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = bucket.put(demo_paths()["translated_pairs"], "data/pairs.jsonl")
    out = f"{bucket.url}/converted/pairs.jsonl"
    assert cli.main(["data", "convert", "--from", "pairs", "--to", "pairs", "--num-shards", "2", source, out]) == 0
    assert bucket.keys("converted") == ["converted/pairs-00000-of-00002.jsonl", "converted/pairs-00001-of-00002.jsonl"]
    expected = sorted((p.query, p.positive) for p in formats.read_pairs(demo_paths()["translated_pairs"]))
    assert sorted((p.query, p.positive) for p in formats.read_pairs(out)) == expected  # read back through the mirror


def test_index_build_and_search_in_a_bucket(bucket, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    passages, queries = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(3, 8)).astype(np.float32)
    np.save(tmp_path / "p.npy", passages)
    np.save(tmp_path / "q.npy", queries)
    p, q = bucket.put(tmp_path / "p.npy", "emb/p.npy"), bucket.put(tmp_path / "q.npy", "emb/q.npy")
    assert cli.main(["index", "build", "--embeddings", p, "--backend", "exact", "--output", f"{bucket.url}/index"]) == 0
    assert cli.main(["index", "search", "--index", f"{bucket.url}/index", "--queries", q, "--top-k", "5",
                     "--output", f"{bucket.url}/search.npz"]) == 0
    assert "search.npz" in bucket.keys()
    (tmp_path / "got.npz").write_bytes(bucket.read("search.npz"))
    found = np.load(tmp_path / "got.npz")
    expected = np.argsort(-(queries @ passages.T), axis=1)[:, :5]
    assert (found["ids"].astype(str) == expected.astype(str)).all()
    assert json.loads(bucket.read("index/index.json"))["embeddings"] == p  # by its URL
