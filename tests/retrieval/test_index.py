"""Exact on-device search equals numpy; 8 devices equal 1; ScaNN recall against exact; stores.
(Index folders are built by the index stage; its refusals and command: tests/stages/test_index.py.)"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from umr_jax.errors import InputError
from umr_jax.retrieval.embeddings import EmbeddingStore, write_manifest, write_shard
from umr_jax.retrieval.index import ExactSearcher, Index, ScannOptions, scann_defaults
from umr_jax.stages.index import build_index


def _store(tmp_path, matrix, shard_rows=700, ids=True):
    folder = tmp_path / "emb"
    shards = []
    for i, start in enumerate(range(0, len(matrix), shard_rows)):
        block = matrix[start : start + shard_rows]
        shard_ids = [f"doc{start + j}" for j in range(len(block))] if ids else [str(start + j) for j in range(len(block))]
        shards.append(write_shard(folder, i, block, shard_ids))
    write_manifest(folder, shards, matrix.shape[1], str(matrix.dtype))
    return folder


def _numpy_top_k(queries, corpus, k):
    scores = queries.astype(np.float64) @ corpus.astype(np.float64).T
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return rows, np.take_along_axis(scores, rows, axis=1)


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.RandomState(0)
    return rng.randn(2500, 24).astype(np.float32), rng.randn(37, 24).astype(np.float32)


@pytest.mark.parametrize("devices", [1, 8])
@pytest.mark.parametrize("chunk_rows", [64, 1000, 1 << 18])
def test_exact_search_equals_numpy(tmp_path, corpus, devices, chunk_rows):
    matrix, queries = corpus
    store = EmbeddingStore.open(_store(tmp_path, matrix))
    searcher = ExactSearcher.from_store(store, chunk_rows=chunk_rows, devices=jax.devices()[:devices])
    assert searcher.num_shards == devices
    scores, rows = searcher.search_rows(queries, 10, query_batch=16)  # several query batches, last one partial
    ref_rows, ref_scores = _numpy_top_k(queries, matrix, 10)
    np.testing.assert_array_equal(rows, ref_rows)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-5)


def test_exact_index_folder_returns_ids(tmp_path, corpus):
    matrix, queries = corpus
    folder = build_index(_store(tmp_path, matrix), tmp_path / "index", backend="exact")
    ids, scores = Index.open(folder).search(queries, 5)
    ref_rows, _ = _numpy_top_k(queries, matrix, 5)
    assert ids.shape == (37, 5)
    assert ids[0].tolist() == [f"doc{r}" for r in ref_rows[0]]
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_single_npy_without_ids_gives_row_numbers(tmp_path, corpus):
    matrix, queries = corpus
    np.save(tmp_path / "m.npy", matrix.astype(np.float16))
    for backend in ("exact", "scann"):
        ids, _ = Index.open(build_index(tmp_path / "m.npy", tmp_path / f"i-{backend}", backend=backend)).search(queries, 3)
        assert ids.dtype == np.int64
        ref_rows, _ = _numpy_top_k(queries, matrix.astype(np.float16).astype(np.float32), 3)
        np.testing.assert_array_equal(ids, ref_rows)  # small corpus: ScaNN scores it exactly


def test_scann_recall_against_exact_on_clustered_embeddings(tmp_path):
    rng = np.random.RandomState(1)
    centers = rng.randn(200, 64).astype(np.float32) * 3
    assign = rng.randint(0, 200, 40_000)
    matrix = (centers[assign] + rng.randn(40_000, 64)).astype(np.float32)
    queries = (centers[rng.randint(0, 200, 300)] + rng.randn(300, 64)).astype(np.float32)
    np.save(tmp_path / "m.npy", matrix)
    settings = scann_defaults(40_000, 10)
    assert not settings["brute_force"] and settings["num_leaves"] == 200 and settings["leaves_to_search"] == 10
    scann_index = Index.open(build_index(tmp_path / "m.npy", tmp_path / "scann", backend="scann", k=10))
    exact_rows, _ = _numpy_top_k(queries, matrix, 10)
    rows, _ = scann_index.search_rows(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact_rows)])
    assert recall >= 0.95, recall
    meta = json.loads((tmp_path / "scann" / "index.json").read_text())
    assert meta["scann"]["reorder_k"] == 250


def test_scann_options_override_defaults():
    s = scann_defaults(1_000_000, 100, ScannOptions(num_leaves=2000, leaves_to_search=150, reorder_k=1000))
    assert (s["num_leaves"], s["leaves_to_search"], s["reorder_k"]) == (2000, 150, 1000)
    assert scann_defaults(1_000_000, 100)["num_leaves"] == 1000


def test_unfinished_folders_are_refused(tmp_path, corpus):
    matrix, _ = corpus
    folder = _store(tmp_path, matrix)
    (folder / "manifest.json").unlink()  # as if the encode was killed before finishing
    with pytest.raises(InputError, match="no manifest.json"):
        EmbeddingStore.open(folder)
    with pytest.raises(InputError, match="no index.json"):
        Index.open(tmp_path)
