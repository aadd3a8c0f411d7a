"""grain pipelines: determinism, exact resumption, bounded shapes, per-process slices, subsets."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from umr_jax.data import pipeline
from umr_jax.demo import demo_paths
from umr_jax.data.buckets import LengthBuckets
from umr_jax.data.subsets import nested_subsets
from umr_jax.errors import InputError

PATHS = demo_paths()


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _passages(n):
    with open(PATHS["passages"], encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        return [dict(zip(header, row)) for _, row in zip(range(n), reader)]


QUESTIONS = _jsonl(PATHS["train_questions"])
PASSAGES = _passages(300)
PAIRS = _jsonl(PATHS["translated_pairs"])


@pytest.fixture(scope="module")
def xlmr():
    return AutoTokenizer.from_pretrained(PATHS["xlmr_tokenizer"])


@pytest.fixture(scope="module")
def t5():
    return AutoTokenizer.from_pretrained(PATHS["t5_tokenizer"])


def _all(dataset):
    return list(iter(dataset))


def _assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


# ---------------------------------------------------------------------------------------------
# Buckets


def test_power_of_two_buckets_end_at_the_maximum():
    assert LengthBuckets.powers_of_two(256).lengths == (16, 32, 64, 128, 256)
    assert LengthBuckets.powers_of_two(200, min_length=32).lengths == (32, 64, 128, 200)
    assert LengthBuckets.powers_of_two(8).lengths == (8,)
    assert LengthBuckets.half_powers_of_two(512, 64).lengths == (64, 96, 128, 192, 256, 384, 512)
    assert LengthBuckets.half_powers_of_two(200, 64).lengths == (64, 96, 128, 192, 200)
    assert LengthBuckets.half_powers_of_two(96, 64).lengths == (64, 96)
    buckets = LengthBuckets((16, 64))
    assert [buckets.index(n) for n in (1, 16, 17, 64)] == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="longer than the largest bucket"):
        buckets.index(65)
    with pytest.raises(ValueError, match="strictly ascending"):
        LengthBuckets((32, 16))


# ---------------------------------------------------------------------------------------------
# Contents


def test_query_batches_hold_the_tokenized_questions(xlmr):
    dataset = pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=16, max_length=32, seed=3, process_index=0, process_count=1)
    batches = _all(dataset)
    seen = []
    for batch in batches:
        assert batch["input_ids"].dtype == np.int32 and batch["attention_mask"].dtype == np.int32
        rows, length = batch["input_ids"].shape
        assert rows == 16 and length in dataset.padded_lengths()[""]
        real = batch["example_mask"] == 1
        lengths = batch["attention_mask"].sum(axis=1)
        # padded to the smallest bucket that fits the longest question of the batch
        assert length == dataset.buckets[""].lengths[dataset.buckets[""].index(lengths.max())]
        for row in np.flatnonzero(real):
            question = QUESTIONS[batch["index"][row]]
            expected = xlmr(question["question"], truncation=True, max_length=32)["input_ids"]
            assert batch["input_ids"][row, : lengths[row]].tolist() == expected
            assert (batch["input_ids"][row, lengths[row] :] == xlmr.pad_token_id).all()
            assert batch["id"][row] == question["id"] and batch["lang"][row] == question["lang"]
        seen += batch["index"][real].tolist()
    assert sorted(seen) == list(range(len(QUESTIONS)))  # one epoch: every question once


def test_passages_encode_title_and_text_as_a_pair(xlmr, t5):
    for tokenizer in (xlmr, t5):
        dataset = pipeline.passage_batches(PASSAGES, tokenizer, global_batch_size=32, max_length=128, process_index=0, process_count=1)
        for batch in dataset:
            for row in np.flatnonzero(batch["example_mask"]):
                passage = PASSAGES[batch["index"][row]]
                expected = tokenizer(passage["title"], passage["text"], truncation="longest_first", max_length=128)["input_ids"]
                n = batch["attention_mask"][row].sum()
                assert batch["input_ids"][row, :n].tolist() == expected
                assert batch["id"][row] == passage["id"]
    ids = xlmr("Tavoren", "Kasimo")["input_ids"]
    assert ids[0] == xlmr.cls_token_id and ids[-1] == xlmr.sep_token_id


def test_records_may_be_objects_with_attributes(xlmr):
    @dataclasses.dataclass(frozen=True)
    class Passage:
        id: str
        title: str
        text: str

    objects = [Passage(p["id"], p["title"], p["text"]) for p in PASSAGES[:40]]
    from_objects = _all(pipeline.passage_batches(objects, xlmr, global_batch_size=8, process_index=0, process_count=1))
    from_dicts = _all(pipeline.passage_batches(PASSAGES[:40], xlmr, global_batch_size=8, process_index=0, process_count=1))
    _assert_same_batches(from_objects, from_dicts)


def test_padding_rows_fill_the_last_batch(xlmr):
    dataset = pipeline.passage_batches(PASSAGES[:70], xlmr, global_batch_size=32, shuffle=False, group_by_length=False, process_index=0, process_count=1)
    batches = _all(dataset)
    assert len(batches) == 3 and all(b["input_ids"].shape[0] == 32 for b in batches)
    last = batches[-1]
    pad = last["example_mask"] == 0
    assert pad.sum() == 32 * 3 - 70
    assert (last["attention_mask"][pad] == 0).all() and (last["input_ids"][pad] == xlmr.pad_token_id).all()
    assert (last["index"][pad] == -1).all() and (last["id"][pad] == "").all()
    # collection order kept
    order = np.concatenate([b["index"][b["example_mask"] == 1] for b in batches])
    assert order.tolist() == list(range(70))


def test_drop_remainder_keeps_only_full_batches(xlmr):
    dataset = pipeline.query_batches(QUESTIONS[:100], xlmr, global_batch_size=32, drop_remainder=True, process_index=0, process_count=1)
    batches = _all(dataset)
    assert len(batches) == 3 and all(b["example_mask"].all() for b in batches)


# ---------------------------------------------------------------------------------------------
# Shapes


@pytest.mark.parametrize("group_by_length", [False, True])
def test_batch_shapes_are_at_most_one_per_bucket(xlmr, group_by_length):
    buckets = LengthBuckets((32, 64, 128, 256))
    dataset = pipeline.passage_batches(
        PASSAGES, xlmr, global_batch_size=16, max_length=256, buckets=buckets, shuffle=True, seed=1,
        group_by_length=group_by_length, num_epochs=2, process_index=0, process_count=1,
    )
    shapes = {b["input_ids"].shape for b in dataset}
    assert len(shapes) <= len(buckets.lengths)
    assert {length for _, length in shapes} <= set(buckets.lengths)


def test_grouped_batches_hold_one_bucket_each(xlmr):
    buckets = LengthBuckets((96, 128, 160, 256))
    dataset = pipeline.passage_batches(PASSAGES, xlmr, global_batch_size=16, buckets=buckets, process_index=0, process_count=1)
    total = 0
    for batch in dataset:
        lengths = batch["attention_mask"].sum(axis=1)[batch["example_mask"] == 1]
        bucket = {buckets.index(n) for n in lengths}
        assert bucket == {buckets.lengths.index(batch["input_ids"].shape[1])}
        total += len(lengths)
    assert total == len(PASSAGES)


# ---------------------------------------------------------------------------------------------
# Determinism and resumption


def test_same_seed_gives_same_batches_and_another_seed_another_order(xlmr):
    make = lambda seed: pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=32, seed=seed, num_epochs=2, process_index=0, process_count=1)  # noqa: E731
    first = _all(make(7))
    _assert_same_batches(first, _all(make(7)))
    other = _all(make(8))
    assert first[0]["index"].tolist() != other[0]["index"].tolist()


def test_epochs_are_reshuffled_and_complete(xlmr):
    dataset = pipeline.query_batches(QUESTIONS[:64], xlmr, global_batch_size=16, seed=5, num_epochs=2, process_index=0, process_count=1)
    order = np.concatenate([b["index"] for b in dataset])
    first, second = order[:64], order[64:]
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(64))
    assert first.tolist() != second.tolist()


@pytest.mark.parametrize("group_by_length,stop_after", [(False, 5), (True, 1), (True, 7), (True, 30)])
def test_resumed_pipeline_yields_exactly_the_remaining_batches(xlmr, group_by_length, stop_after):
    def make():
        return pipeline.passage_batches(
            PASSAGES, xlmr, global_batch_size=16, max_length=256, buckets=LengthBuckets((96, 128, 160, 256)),
            shuffle=True, seed=11, num_epochs=2, group_by_length=group_by_length, process_index=0, process_count=1,
        )

    full = _all(make())
    iterator = iter(make())
    for _ in range(stop_after):
        next(iterator)
    state = json.loads(json.dumps(iterator.get_state()))  # survives a JSON checkpoint
    if group_by_length and stop_after == 7:
        assert state["pending"], "the test should cover buffered (pending) records"
    resumed = iter(make())
    resumed.set_state(state)
    _assert_same_batches(full[stop_after:], list(resumed))


def test_state_of_another_pipeline_is_rejected(xlmr):
    iterator = iter(pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=32, seed=1, process_index=0, process_count=1))
    next(iterator)
    other = iter(pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=32, seed=2, process_index=0, process_count=1))
    with pytest.raises(ValueError, match="belongs to another pipeline"):
        other.set_state(iterator.get_state())


# ---------------------------------------------------------------------------------------------
# Per-process slices


@pytest.mark.parametrize("group_by_length", [False, True])
def test_process_slices_concatenate_to_the_global_batch(xlmr, group_by_length):
    def make(index, count):
        return pipeline.passage_batches(
            PASSAGES[:150], xlmr, global_batch_size=16, max_length=256, shuffle=True, seed=4,
            group_by_length=group_by_length, process_index=index, process_count=count,
        )

    whole = _all(make(0, 1))
    halves = [_all(make(0, 2)), _all(make(1, 2))]
    quarters = [_all(make(i, 4)) for i in range(4)]
    assert len(halves[0]) == len(halves[1]) == len(whole)
    for parts in (halves, quarters):
        for step, batch in enumerate(whole):
            for key in batch:
                joined = np.concatenate([part[step][key] for part in parts])
                np.testing.assert_array_equal(joined, batch[key], err_msg=key)
            assert all(part[step]["input_ids"].shape[0] == 16 // len(parts) for part in parts)


def test_process_defaults_come_from_jax(xlmr):
    dataset = pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=8)
    assert (dataset.process_index, dataset.process_count) == (0, 1)


def test_bad_batch_and_process_settings_are_refused(xlmr):
    with pytest.raises(ValueError, match="not divisible by process_count"):
        pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=10, process_index=0, process_count=4)
    with pytest.raises(ValueError, match="not in"):
        pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=8, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="shorter than its truncation length"):
        pipeline.query_batches(QUESTIONS, xlmr, global_batch_size=8, max_length=64, buckets=LengthBuckets((16, 32)), process_index=0, process_count=1)


def test_a_bad_record_is_named(xlmr):
    records = QUESTIONS[:5] + [{"id": "x", "lang": "fi"}]
    dataset = pipeline.query_batches(records, xlmr, global_batch_size=8, shuffle=False, source_name="questions.jsonl", process_index=0, process_count=1)
    with pytest.raises(InputError, match=r"questions.jsonl: record 5: field 'question' is missing"):
        _all(dataset)


# ---------------------------------------------------------------------------------------------
# Nested subsets


def test_nested_subsets_are_nested_and_sized():
    langs = [q["lang"] for q in QUESTIONS]
    subsets = nested_subsets(langs, [10, 100, 500], seed=0)
    assert [len(subsets[n]) for n in (10, 100, 500)] == [10, 100, 500]
    assert set(subsets[10]) <= set(subsets[100]) <= set(subsets[500])
    assert nested_subsets(langs, [100], seed=0)[100].tolist() == subsets[100].tolist()
    assert nested_subsets(langs, [100], seed=1)[100].tolist() != subsets[100].tolist()


def test_per_language_subsets_do_not_depend_on_other_languages():
    langs = [q["lang"] for q in QUESTIONS]
    both = nested_subsets(langs, [5, 50], seed=3, languages=["fi", "ja"], per_language=True)
    fi_only = nested_subsets(langs, [5, 50], seed=3, languages=["fi"], per_language=True)
    for size in (5, 50):
        picked = [langs[i] for i in both[size]]
        assert picked.count("fi") == picked.count("ja") == size
        assert [i for i in both[size] if langs[i] == "fi"] == fi_only[size].tolist()
    assert set(both[5]) <= set(both[50])
    with pytest.raises(ValueError, match="exceeds the 120 records of language 'fi'"):
        nested_subsets(langs, [121], seed=0, languages=["fi"], per_language=True)
    with pytest.raises(ValueError, match="no records of language"):
        nested_subsets(langs, [1], seed=0, languages=["en"])


def test_a_subset_feeds_a_pipeline(xlmr):
    langs = [q["lang"] for q in QUESTIONS]
    indices = nested_subsets(langs, [20], seed=0, languages=["ko"])[20]
    subset = [QUESTIONS[i] for i in indices]
    assert len(subset) == 20 and all(r["lang"] == "ko" for r in subset)
    batches = _all(pipeline.query_batches(subset, xlmr, global_batch_size=8, process_index=0, process_count=1))
    assert sorted(np.concatenate([b["id"][b["example_mask"] == 1] for b in batches]).tolist()) == sorted(QUESTIONS[i]["id"] for i in indices)
