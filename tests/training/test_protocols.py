"""How long a run trains, the same rules for both trainers: a fixed number of steps
(`train.steps`), warm-up as a fraction of the run (`train.warmup_fraction`), early stopping on a
dev split held out of the source (`train.early_stopping_patience`, `data.dev_split`), and the
errors for settings that train for zero steps."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from tests.training.conftest import tiny_retriever  # noqa: F401 (a fixture)
from umr_jax.data.subsets import held_out_indices, nested_subset_indices
from umr_jax.demo import demo_paths
from umr_jax.errors import InputError
from umr_jax.runtime import runtime_config
from umr_jax.training import contrastive
from umr_jax.training.common import EarlyStopping, total_steps_of, warmup_steps_of
from umr_jax.training.dev_selection import EpochEnds, EveryNSteps


def section(**values):
    return ml_collections.ConfigDict(values)


def test_total_steps_and_warm_up():
    assert total_steps_of(section(epochs=2.5, steps=0), 10) == 25
    assert total_steps_of(section(epochs=1, steps=7), 1000) == 7  # fixed compute, whatever the data
    assert total_steps_of(section(epochs=0.01), 10) == 1
    with pytest.raises(InputError, match=r"train.epochs=0 trains for zero steps"):
        total_steps_of(section(epochs=0), 10)
    with pytest.raises(InputError, match=r"train.steps=-3; expected"):
        total_steps_of(section(epochs=1, steps=-3), 10)
    assert warmup_steps_of(section(warmup_fraction=0.1), 25, default=1000) == 2  # round(2.5): banker's rounding
    assert warmup_steps_of(section(warmup_fraction=0.1), 47_000, default=1000) == 4700
    assert warmup_steps_of(section(), 25, default=1000) == 1000  # no fraction: the trainer's own rule
    with pytest.raises(InputError, match=r"train.warmup_fraction=1.5; expected a fraction"):
        warmup_steps_of(section(warmup_fraction=1.5), 25, default=0)


def test_early_stopping_counts_measurements_since_the_best():
    every = EarlyStopping(EveryNSteps(5, 100), patience=2)
    assert not every.should_stop(10, best_step=None)  # nothing measured that could be the best
    assert not every.should_stop(5, best_step=0)      # one measurement since the best
    assert not every.should_stop(12, best_step=0)     # not a measurement
    assert every.should_stop(10, best_step=0) and every.should_stop(30, best_step=20)
    # The released schedule: only epoch ends may be the best, so only they count.
    ends = EarlyStopping(EpochEnds(steps_per_epoch=10, eval_per_epoch=2, start_epoch=0, total_steps=100), patience=2)
    assert not ends.should_stop(25, best_step=10) and not ends.should_stop(20, best_step=10)
    assert ends.should_stop(30, best_step=10)


def test_dev_split_is_in_no_subset():
    dev = held_out_indices(1000, 100, seed=3)
    assert len(dev) == 100 and len(set(dev)) == 100
    for size in (10, 300, 900):
        subset = nested_subset_indices(1000, size, seed=3, held_out=100)
        assert not set(subset) & set(dev)
        np.testing.assert_array_equal(subset, nested_subset_indices(1000, size, seed=3))  # the subsets a split leaves alone
    whole = nested_subset_indices(1000, 0, seed=3, held_out=100)
    assert sorted(set(whole) | set(dev)) == list(range(1000))
    with pytest.raises(InputError, match=r"data.subset_size=901 exceeds the 900 pairs of the source left after "
                                         r"data.dev_split=100"):
        nested_subset_indices(1000, 901, seed=3, noun="pairs", held_out=100)
    with pytest.raises(InputError, match=r"data.dev_split=1000 must be >= 0 and leave training"):
        nested_subset_indices(1000, 0, seed=3, held_out=1000)


def run_config(tmp_path, retriever, name, **train):
    return ml_collections.ConfigDict({
        "objective": "contrastive", "output_dir": str(tmp_path / name),
        "model": dict(init=str(retriever), pooling="mean", separate_towers=False, similarity="dot", dtype="float32",
                      query_max_length=16, passage_max_length=32),
        "data": dict(source="pairs", path=str(demo_paths()["translated_pairs"]), languages=None, min_similarity=None,
                     subset_size=64, hard_negatives=0, dev_path="", dev_split=24),
        "train": dict(dict(batch_size=32, epochs=3, learning_rate=3e-3, adam_eps=1e-8, weight_decay=0.0, warmup_steps=2,
                           grad_clip_norm=2.0, dropout=0.0, seed=1, scale=1.0, grad_cache=False, query_chunk=32,
                           passage_chunk=32, eval_every=1, checkpoint_every=100, keep_checkpoints=1, log_every=1), **train),
        "runtime": runtime_config(),
    })


def dev_steps(folder):
    return [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines() if '"dev"' in line]


def test_fixed_steps_and_early_stopping_in_real_runs(tmp_path, tiny_retriever):  # noqa: F811
    # Fixed compute: 5 steps over a 64-pair subset (2 batches an epoch), whatever train.epochs says.
    summary = contrastive.train(run_config(tmp_path, tiny_retriever, "fixed", steps=5, eval_every=100))
    assert (summary["reason"], summary["steps"], summary["total_steps"]) == ("done", 5, 5)

    # With a learning rate of 0 the dev ranking never improves on step 0's: patience 2 stops the
    # run at step 2 of 6 (3 epochs of 2 batches), and the retriever is step 0's (`best`).
    config = run_config(tmp_path, tiny_retriever, "stopped", learning_rate=0.0, early_stopping_patience=2)
    summary = contrastive.train(config)
    assert (summary["reason"], summary["steps"], summary["total_steps"]) == ("early_stopped", 2, 6)
    assert summary["best"]["step"] == 0 and summary["final_dir"] is not None
    assert dev_steps(tmp_path / "stopped") == [0, 1, 2]
    # Run again (a kill after the stop, before it was recorded): it stops at once, training nothing.
    again = contrastive.train(config)
    assert (again["reason"], again["steps"]) == ("early_stopped", 2) and dev_steps(tmp_path / "stopped") == [0, 1, 2]

    # Single-language batches reach the trainer: 64 pairs of several languages fill no batch of 64.
    by_language = run_config(tmp_path, tiny_retriever, "by_language", batch_size=64)
    by_language.data.batch_by_language = True
    with pytest.raises(InputError, match=r"no language has 64 pairs for one single-language batch"):
        contrastive.train(by_language)

    no_dev = run_config(tmp_path, tiny_retriever, "nodev", early_stopping_patience=2)
    no_dev.data.dev_split = 0
    with pytest.raises(InputError, match="train.early_stopping_patience needs dev data"):
        contrastive.train(no_dev)
    with pytest.raises(InputError, match="data.dev_split and data.dev_path both name dev pairs"):
        bad = run_config(tmp_path, tiny_retriever, "both")
        bad.data.dev_path = str(demo_paths()["translated_pairs"])
        contrastive.train(bad)
