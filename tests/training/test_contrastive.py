"""Contrastive training on pairs: nested subsets, resumable batches, dev ranking improves."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from umr_jax.data import formats
from umr_jax.data.subsets import nested_subset
from umr_jax.demo import demo_paths
from umr_jax.errors import InputError
from umr_jax.models import hf_io
from umr_jax.training import contrastive
from umr_jax.runtime import runtime_config


def test_nested_subsets_of_pairs():
    pairs = list(formats.read_pairs(demo_paths()["translated_pairs"]))
    small, large = nested_subset(pairs, 50, seed=4), nested_subset(pairs, 200, seed=4)
    assert len(small) == 50 and len(large) == 200
    assert {(p.query, p.positive) for p in small} <= {(p.query, p.positive) for p in large}
    assert nested_subset(pairs, 0, seed=4) == pairs


def test_pair_batches_resume_exactly():
    pairs = list(formats.read_pairs(demo_paths()["translated_pairs"]))[:40]
    tok = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    make = lambda: contrastive.PairBatches(pairs, tok, batch_size=16, hard_negatives=0, seed=2, passage_max_length=64)  # noqa: E731
    a = make()
    seq = [next(a) for _ in range(4)]
    b = make()
    next(b)
    c = make()
    c.set_state(b.get_state())
    for expected in seq[1:]:
        got = next(c)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key])
    # fixed_lengths: the same rows padded to the maximum lengths.
    fixed = contrastive.PairBatches(pairs, tok, batch_size=16, hard_negatives=0, seed=2, query_max_length=64,
                                    passage_max_length=64, fixed_lengths=True)
    for expected in seq[:2]:
        got = next(fixed)
        for key in ("query", "passage"):
            ids, width = got[f"{key}_ids"], expected[f"{key}_ids"].shape[1]
            assert ids.shape[1] == 64 and width <= ids.shape[1]
            np.testing.assert_array_equal(ids[:, :width], expected[f"{key}_ids"])
            assert not got[f"{key}_mask"][:, width:].any()
    # Two processes: each keeps half of the global batch's rows (the shared base, data.batches).
    halves = [contrastive.PairBatches(pairs, tok, batch_size=16, hard_negatives=0, seed=2, passage_max_length=64,
                                      process_index=i, process_count=2) for i in range(2)]
    parts = [next(h) for h in halves]
    for key in seq[0]:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), seq[0][key])
    with pytest.raises(ValueError, match="batch_size 16 must divide over 3 processes"):
        contrastive.PairBatches(pairs, tok, batch_size=16, hard_negatives=0, seed=2, process_index=0, process_count=3)


def test_contrastive_training_improves_dev_ranking(tiny_retriever, tmp_path):
    pairs = list(formats.read_pairs(demo_paths()["translated_pairs"]))
    formats.write_pairs(tmp_path / "dev.jsonl", pairs[:48])
    config = ml_collections.ConfigDict({
        "objective": "contrastive", "output_dir": str(tmp_path / "run"),
        "model": dict(init=str(tiny_retriever), pooling="mean", separate_towers=False, similarity="dot", dtype="float32",
                      query_max_length=32, passage_max_length=64),
        "data": dict(source="pairs", path=str(demo_paths()["translated_pairs"]), languages=None, min_similarity=None,
                     subset_size=0, hard_negatives=0, dev_path=str(tmp_path / "dev.jsonl")),
        "train": dict(batch_size=32, epochs=2, learning_rate=3e-3, adam_eps=1e-8, weight_decay=0.0, warmup_steps=2,
                      grad_clip_norm=2.0, dropout=0.0, seed=1, scale=1.0, grad_cache=False, query_chunk=32, passage_chunk=32,
                      eval_every=100, checkpoint_every=100, keep_checkpoints=1, log_every=5),
        "runtime": runtime_config(),
    })
    summary = contrastive.train(config)
    assert summary["reason"] == "done" and summary["pairs"] == len(pairs)
    dev = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"dev"' in line]
    assert dev[0]["step"] == 0 and dev[-1]["step"] == summary["total_steps"]
    assert dev[-1]["positive_mean_rank"] < 0.8 * dev[0]["positive_mean_rank"]
    assert hf_io.load_bert(tmp_path / "run" / "best" / "encoder").config.pooling == "mean"


def test_single_language_batches():
    pairs = list(formats.read_pairs(demo_paths()["translated_pairs"]))[:150]
    tok = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    langs = np.array([p.lang for p in pairs])
    counts = {lang: int((langs == lang).sum()) for lang in set(langs.tolist())}
    assert len(counts) > 1
    make = lambda: contrastive.PairBatches(pairs, tok, batch_size=8, hard_negatives=0, seed=2,  # noqa: E731
                                           passage_max_length=32, by_language=True)
    batches = make()
    assert batches.steps_per_epoch == sum(n // 8 for n in counts.values()) < len(pairs) // 8 + len(counts)
    epoch = [batches.next_indices() for _ in range(batches.steps_per_epoch)]
    assert all(len(set(langs[rows].tolist())) == 1 for rows in epoch)  # one language per batch
    seen = np.concatenate(epoch)
    assert len(set(seen.tolist())) == len(seen)  # no pair twice in an epoch
    assert {lang: int((langs[seen] == lang).sum()) for lang in counts} == {k: n // 8 * 8 for k, n in counts.items()}
    assert len({tuple(sorted(set(langs[rows].tolist()))) for rows in epoch}) == len([n for n in counts.values() if n >= 8])
    following = batches.next_indices()
    assert batches.epoch == 1 and len(set(langs[following].tolist())) == 1
    # Resumed from its state, a batcher yields what the original would have.
    again = make()
    again.set_state({"epoch": 0, "position": 8 * 3})
    np.testing.assert_array_equal(again.next_indices(), epoch[3])
    # Within a subset, by the subset's languages.
    subset = np.arange(0, 150, 2)
    sub = contrastive.PairBatches(pairs, tok, batch_size=8, hard_negatives=0, seed=2, passage_max_length=32,
                                  subset=subset, by_language=True)
    assert all(len(set(langs[sub.next_indices()].tolist())) == 1 for _ in range(sub.steps_per_epoch))
    with pytest.raises(InputError, match=r"no language has 100 pairs for one single-language batch"):
        contrastive.PairBatches(pairs, tok, batch_size=100, hard_negatives=0, seed=2, by_language=True)


def test_single_language_batches_from_a_store(tmp_path, monkeypatch):
    from umr_jax.data.pair_store import open_pair_store
    from umr_jax.data.subsets import nested_subset_indices

    monkeypatch.setenv("UMR_JAX_CACHE", str(tmp_path))
    store = open_pair_store("pairs", demo_paths()["translated_pairs"])
    tok = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    subset = nested_subset_indices(len(store), 200, seed=0)
    batches = contrastive.PairBatches(store, tok, batch_size=8, hard_negatives=0, seed=2, passage_max_length=32,
                                      subset=subset, by_language=True)
    for _ in range(batches.steps_per_epoch):
        rows = batches.next_indices()
        assert set(rows.tolist()) <= set(subset.tolist())
        assert len({store[int(i)].lang for i in rows}) == 1
    batch = next(batches)
    assert batch["query_ids"].shape[0] == 8
