"""Declared arms of the scaling study (issue 21, part 1): stratified subsets (equal language
shares, nested, memory by chunks), `data.languages="xor"`, and the direction of translated pairs
read from each pair's `passage_lang`."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from umr_jax.data import formats, subsets
from umr_jax.data.formats import Pair
from umr_jax.data.languages import XOR_LANGUAGES
from umr_jax.errors import InputError
from umr_jax.scaling.runner import source_size
from umr_jax.training.contrastive import open_pairs, training_pairs_available, training_subset

NAMES = ["fi", "ar", "ja"]  # a store's languages, in its own (first-seen) order


def row_languages(n=6000, seed=0):
    return np.random.default_rng(seed).choice(3, size=n, p=[0.7, 0.2, 0.1]).astype(np.uint16)


def test_stratified_subsets_have_equal_shares_and_are_nested():
    langs = row_languages()
    previous = set()
    for size in (3, 10, 100, 301, 900):
        rows = subsets.stratified_subset_indices(langs, NAMES, size, seed=5)
        assert len(rows) == size and np.all(np.diff(rows) > 0)
        counts = dict(zip(NAMES, np.bincount(langs[rows], minlength=3).tolist()))
        assert counts == subsets.equal_shares(size, NAMES)  # extras to ar, then fi (sorted), never ja first
        assert max(counts.values()) - min(counts.values()) <= 1
        assert previous <= set(rows.tolist())
        previous = set(rows.tolist())
    # Each language's share is a prefix of its own seeded order: the per-language nested subsets.
    as_codes = np.array(NAMES)[langs]
    expected = subsets.nested_subsets(as_codes, [120], seed=5, per_language=True)[120]
    np.testing.assert_array_equal(subsets.stratified_subset_indices(langs, NAMES, 360, seed=5), expected)
    assert not np.array_equal(subsets.stratified_subset_indices(langs, NAMES, 360, seed=6), expected)


def test_a_languages_share_does_not_depend_on_the_other_languages():
    langs = row_languages()
    both = subsets.stratified_subset_indices(langs, NAMES, 200, seed=3)
    only_ja = np.where(langs == 2, 2, 0).astype(np.uint16)  # every other row relabelled fi
    alone = subsets.stratified_subset_indices(only_ja, NAMES[:1] + ["unused"] + NAMES[2:], 200, seed=3)
    ja = lambda rows, codes: set(rows[codes[rows] == 2].tolist())  # noqa: E731
    assert ja(both, langs) <= ja(alone, only_ja)  # 66 of ja in one, 100 in the other: a prefix of the same order


def test_chunked_selection_equals_one_pass(monkeypatch):
    langs = row_languages(5000)
    whole = subsets.stratified_subset_indices(langs, NAMES, 450, seed=9, held_out=40)
    monkeypatch.setattr(subsets, "_CHUNK", 64)  # counted in 79 chunks, selected in 12 of 450 rows
    np.testing.assert_array_equal(subsets.stratified_subset_indices(langs, NAMES, 450, seed=9, held_out=40), whole)


def test_held_out_rows_and_the_largest_subset():
    langs = row_languages(3000)
    held = set(subsets.held_out_indices(len(langs), 100, seed=2).tolist())
    available = subsets.available_by_language(langs, NAMES, seed=2, held_out=100)
    assert sum(available.values()) == len(langs) - 100
    largest = subsets.largest_stratified_size(available)
    assert largest == min(available[name] * 3 + i for i, name in enumerate(sorted(available)))
    everything = subsets.stratified_subset_indices(langs, NAMES, 0, seed=2, held_out=100)
    assert len(everything) == largest and not held & set(everything.tolist())
    with pytest.raises(InputError, match=rf"data.stratify: a subset of {largest + 1} examples takes \d+ of each of its 3 "
                                         rf"languages, but ja has {available['ja']} left after data.dev_split=100; the "
                                         rf"largest stratified subset is {largest}"):
        subsets.stratified_subset_indices(langs, NAMES, largest + 1, seed=2, held_out=100)


def write(path, pairs):
    formats.write_pairs(path, pairs)
    return path


def data(path, **extra):
    return ml_collections.ConfigDict({"source": "pairs", "path": str(path), "languages": None, "dev_split": 0,
                                      "stratify": False, "direction": None, "subset_size": 0, **extra})


def pairs(n=40):
    langs = ("ar", "ja", "ko", "de")
    return [Pair(f"q{i}", f"p{i}", langs[i % 4], passage_lang="en" if i % 8 < 4 else langs[i % 4]) for i in range(n)]


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_passage_lang_round_trips_and_picks_a_direction(tmp_path, suffix):
    path = write(tmp_path / f"pairs{suffix}", pairs())
    assert list(formats.read_pairs(path)) == pairs()
    counts = {d: open_pairs(data(path, direction=d)).rows_per_language for d in (None, "monolingual", "cross-lingual", "both")}
    assert counts[None] == counts["both"] == {"ar": 10, "ja": 10, "ko": 10, "de": 10}
    assert counts["monolingual"] == counts["cross-lingual"] == {"ar": 5, "ja": 5, "ko": 5, "de": 5}
    store = open_pairs(data(path, direction="cross-lingual"))
    assert {p.query for p in store} == {f"q{i}" for i in range(40) if i % 8 < 4}


def test_a_direction_needs_every_pairs_passage_lang(tmp_path):
    path = write(tmp_path / "pairs.jsonl", pairs(6) + [Pair("q", "p", "ja")])
    with pytest.raises(InputError, match=r"pairs.jsonl: record 7: data.direction=both needs every pair's passage_lang"):
        open_pairs(data(path, direction="both"))
    with pytest.raises(InputError, match="data.direction must be one of monolingual, cross-lingual, both"):
        open_pairs(data(path, direction="translated"))
    assert len(open_pairs(data(path))) == 7  # undeclared: every pair
    webfaq = ml_collections.ConfigDict({"source": "webfaq", "path": str(tmp_path), "direction": "cross-lingual"})
    with pytest.raises(InputError, match="WebFAQ pairs are monolingual"):
        open_pairs(webfaq)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "positive": "p", "lang": "ja", "passage_lang": "english"}) + "\n")
    with pytest.raises(InputError, match=r"bad.jsonl:1: unknown language code 'english'"):
        open_pairs(data(bad))


def test_xor_names_those_of_xors_languages_the_source_has(tmp_path):
    path = write(tmp_path / "pairs.jsonl", pairs())
    assert open_pairs(data(path, languages="xor")).rows_per_language == {"ar": 10, "ja": 10, "ko": 10}
    assert open_pairs(data(path, languages=["xor", "de"])).rows_per_language == {"ar": 10, "ja": 10, "ko": 10, "de": 10}
    with pytest.raises(InputError, match=r"asks for ru, which this source has no pairs of"):
        open_pairs(data(path, languages="xor,ru"))  # named outright: it must be there
    german = write(tmp_path / "de.jsonl", [Pair("q", "p", "de")])
    with pytest.raises(InputError, match="no training pairs"):
        open_pairs(data(german, languages="xor"))
    assert set(XOR_LANGUAGES) == {"ar", "bn", "fi", "ja", "ko", "ru", "te"}


def test_the_trainer_and_the_study_draw_stratified_subsets_from_a_store(tmp_path):
    rows = [Pair(f"q{i}", f"p{i}", lang) for i, lang in enumerate(["ar"] * 30 + ["ja"] * 12 + ["ko"] * 50)]
    path = write(tmp_path / "pairs.parquet", rows)
    d = data(path, stratify=True, dev_split=5, subset_size=24)
    store = open_pairs(d)
    subset = training_subset(store, d, seed=4)
    langs = [store[int(i)].lang for i in subset]
    assert {lang: langs.count(lang) for lang in set(langs)} == {"ar": 8, "ja": 8, "ko": 8}
    held = set(subsets.held_out_indices(len(store), 5, seed=4).tolist())
    assert not held & set(subset.tolist())
    ja_left = 12 - sum(store[i].lang == "ja" for i in held)
    assert training_pairs_available(d, 4) == ja_left * 3 + 1  # ja is second of ar, ja, ko
    study_arm = ml_collections.ConfigDict({"objective": "contrastive", "data": {**d.to_dict(), "subset_seed": 4},
                                           "train": {"seed": 0}})
    assert source_size(study_arm) == ja_left * 3 + 1
    d.stratify = False
    assert training_pairs_available(d, 4) == 92 - 5
