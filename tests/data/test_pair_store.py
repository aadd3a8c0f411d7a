"""`data.pair_store`: pairs converted once into a store read by row, cached by the source's files;
subsets and epoch orders as index arrays over it, equal to the list-based ones they replace."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from umr_jax.data import formats, subsets
from umr_jax.data.pair_store import PairStore, open_pair_store, write_pair_store
from umr_jax.demo import demo_paths
from umr_jax.errors import InputError
from umr_jax.training.contrastive import PairBatches

from tests.data.test_batches import Tokenizer


def _pairs(n: int, negatives: int = 0) -> list[formats.Pair]:
    return [formats.Pair(query=f"question {i} ß", positive=f"answer {i} " + "x" * (i % 9), lang=("ja", "ar", "te")[i % 3],
                         negatives=tuple(f"neg {i}.{k}" for k in range(negatives))) for i in range(n)]


def test_round_trip_equals_the_source_rows(tmp_path):
    p = demo_paths()
    webfaq = open_pair_store("webfaq", p["webfaq_dir"], root=tmp_path)
    expected = [formats.webfaq_to_pair(r) for r in formats.read_webfaq(p["webfaq_dir"])]
    assert len(webfaq) == 350 and list(webfaq) == expected
    assert webfaq.rows([349, 0, 17]) == [expected[349], expected[0], expected[17]] and webfaq[-1] == expected[-1]
    assert webfaq.rows_per_language == {lang: 50 for lang in ("ar", "bn", "fi", "ja", "ko", "ru", "te")}
    codes = webfaq.row_languages()
    assert [webfaq.languages[c] for c in codes[[0, 349]]] == [expected[0].lang, expected[349].lang]
    # Pairs with hard negatives, parquet, filtered by language.
    pairs = _pairs(30, negatives=2)
    formats.write_pairs(tmp_path / "pairs.parquet", pairs)
    store = open_pair_store("pairs", tmp_path / "pairs.parquet", languages=["ja", "te"], root=tmp_path)
    assert list(store) == [q for q in pairs if q.lang in ("ja", "te")] and store.fewest_negatives == 2
    with pytest.raises(IndexError, match="row 20 out of range for 20 pairs"):
        store.rows([20])


def test_a_store_is_converted_once_and_again_when_its_source_changes(tmp_path):
    path = tmp_path / "pairs.jsonl"
    formats.write_pairs(path, _pairs(12))
    first = open_pair_store("pairs", path, root=tmp_path / "stores")
    stamp = (first.folder / "store.json").stat().st_mtime_ns
    again = open_pair_store("pairs", path, root=tmp_path / "stores")
    assert again.folder == first.folder and (again.folder / "store.json").stat().st_mtime_ns == stamp
    formats.write_pairs(path, _pairs(15))
    changed = open_pair_store("pairs", path, root=tmp_path / "stores")
    assert changed.folder != first.folder and len(changed) == 15
    assert json.loads((changed.folder / "store.json").read_text())["source"]["files"][0]["bytes"] == path.stat().st_size


def test_an_interrupted_conversion_leaves_nothing(tmp_path):
    def failing():
        yield from _pairs(5)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_pair_store(failing(), tmp_path / "store")
    assert os.listdir(tmp_path) == []
    with pytest.raises(InputError, match="not a complete pair store"):
        PairStore(tmp_path / "store")
    with pytest.raises(InputError, match="no training pairs"):
        write_pair_store(iter(()), tmp_path / "store")


def test_subset_indices_are_the_nested_subsets_and_refuse_a_larger_size(monkeypatch):
    monkeypatch.setattr(subsets, "_CHUNK", 1000)  # several chunks: the selection must not depend on them
    for count, size, seed in [(5000, 37, 1), (5000, 4999, 4), (2500, 1000, 0)]:
        got = subsets.nested_subset_indices(count, size, seed)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, subsets.nested_subsets(["x"] * count, [size], seed=seed)[size])
    small, large = (set(subsets.nested_subset_indices(5000, n, 3).tolist()) for n in (100, 1000))
    assert len(small) == 100 and small < large
    assert subsets.nested_subset_indices(5000, 0, 3) is None and subsets.nested_subset_indices(5000, 5000, 3) is None
    with pytest.raises(InputError, match="data.subset_size=5001 exceeds the 5000 pairs of the source"):
        subsets.nested_subset_indices(5000, 5001, 3, noun="pairs")


def test_store_batches_equal_the_list_batches_they_replace(tmp_path):
    pairs = _pairs(200)
    store = write_pair_store(pairs, tmp_path / "store")
    store = PairStore(store)
    options = dict(batch_size=8, hard_negatives=0, seed=2, passage_max_length=64)
    old = PairBatches(subsets.nested_subset(pairs, 90, seed=4), Tokenizer(), **options)  # the list path, as before
    new = PairBatches(store, Tokenizer(), subset=subsets.nested_subset_indices(len(store), 90, 4), **options)
    assert new.steps_per_epoch == old.steps_per_epoch == 11
    for _ in range(25):  # across two epoch boundaries
        a, b = next(old), next(new)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_epoch_orders_are_seeded_and_a_resume_mid_epoch_gives_the_same_batches(tmp_path):
    store = PairStore(write_pair_store(_pairs(100), tmp_path / "store"))
    subset = subsets.nested_subset_indices(len(store), 64, 1)
    make = lambda seed=2: PairBatches(store, Tokenizer(), batch_size=8, hard_negatives=0, seed=seed,  # noqa: E731
                                      passage_max_length=64, subset=subset)
    batcher = make()
    first = [batcher.next_indices() for _ in range(8)]
    assert sorted(np.concatenate(first).tolist()) == subset.tolist()  # one epoch visits the subset once
    np.testing.assert_array_equal(make().epoch_order(0), np.random.default_rng([2, 0]).permutation(64))
    assert not np.array_equal(make().epoch_order(1), make().epoch_order(0))
    assert not np.array_equal(make(seed=3).epoch_order(0), make().epoch_order(0))
    # The permutation is made once per epoch, not per batch.
    fresh = make()
    next(fresh)
    order = fresh.epoch_order(0)
    next(fresh)
    assert fresh.epoch == 0 and fresh.epoch_order(0) is order
    reference = make()
    expected = [next(reference) for _ in range(13)]
    resumed_from = make()
    for _ in range(5):
        next(resumed_from)
    resumed = make()
    resumed.set_state(json.loads(json.dumps(resumed_from.get_state())))
    assert resumed.get_state() == {"epoch": 0, "position": 40}
    for want in expected[5:]:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_the_batcher_holds_index_arrays_only(tmp_path):
    """The cheap proxy of the memory benchmark (bench/bench_scaling_memory.py): over a store, no
    attribute of the batcher is a list of the pairs, and its arrays are the subset and one
    epoch's order at 4 bytes per example."""
    count = 3000
    store = PairStore(write_pair_store(_pairs(count), tmp_path / "store"))
    subset = subsets.nested_subset_indices(count, 2000, 0)
    batches = PairBatches(store, Tokenizer(), batch_size=16, hard_negatives=0, seed=0, subset=subset)
    next(batches)
    arrays = {k: v for k, v in vars(batches).items() if isinstance(v, np.ndarray)}
    arrays.update({"order": batches._order[1]})
    assert {k: v.dtype for k, v in arrays.items()} == {"subset": np.int32, "order": np.int32}
    assert sum(v.nbytes for v in arrays.values()) == 4 * 2000 * 2
    for name, value in vars(batches).items():
        assert not isinstance(value, (list, tuple, dict)) or len(value) < 100, name
        assert sys.getsizeof(value) < 10_000 or isinstance(value, np.ndarray), name
    assert sys.getsizeof(store) < 1000 and store.folder.is_dir()
