"""Atomic, sharded writing and streamed reading: a crash never leaves a file that looks complete,
shard sets are found and checked, JSON lists stream item by item across read chunks."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umr_jax.data import files, reading
from umr_jax.data import formats as F
from umr_jax.data.validation import SeenIds, id_key
from umr_jax.errors import InputError
from tests.data import samples


class Crash(RuntimeError):
    pass


def crashing(records, after: int):
    for i, record in enumerate(records):
        if i == after:
            raise Crash("killed mid-write")
        yield record


def test_interrupted_write_leaves_no_final_file_and_no_temporary(tmp_path):
    with pytest.raises(Crash):
        F.write_questions(tmp_path / "q.jsonl", crashing(samples.QUESTIONS, after=2))
    assert os.listdir(tmp_path) == []


def test_interrupted_sharded_write_leaves_no_shard(tmp_path):
    for sharding in ({"num_shards": 2}, {"records_per_shard": 1}):
        with pytest.raises(Crash):
            F.write_dpr_passages(tmp_path / "p.tsv", crashing(samples.PASSAGES, after=3), **sharding)
        assert os.listdir(tmp_path) == []


def test_interrupted_rewrite_keeps_the_previous_complete_file(tmp_path):
    path = tmp_path / "run.json"
    F.write_dpr_json(path, samples.RESULTS)
    before = path.read_bytes()
    with pytest.raises(Crash):
        F.write_dpr_json(path, crashing(samples.RESULTS * 3, after=4))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["run.json"]


def test_atomic_file_is_fsynced_and_renamed_only_on_commit(tmp_path):
    target = tmp_path / "sub" / "x.bin"
    atomic = files.AtomicFile(target)
    atomic.file.write(b"abc")
    assert not target.exists() and atomic.tmp_path.parent == target.parent
    assert atomic.commit() == target and target.read_bytes() == b"abc"
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # the usual mode, not mkstemp's


def test_rewrite_with_another_shard_count_removes_the_stale_set(tmp_path):
    F.write_questions(tmp_path / "q.jsonl", samples.QUESTIONS, num_shards=4)
    F.write_questions(tmp_path / "q.jsonl", samples.QUESTIONS, num_shards=2)
    assert sorted(os.listdir(tmp_path)) == ["q-00000-of-00002.jsonl", "q-00001-of-00002.jsonl"]
    F.write_questions(tmp_path / "q.jsonl", samples.QUESTIONS)
    assert os.listdir(tmp_path) == ["q.jsonl"]
    assert list(F.read_questions(tmp_path / "q.jsonl")) == samples.QUESTIONS


def test_shard_names_and_mixed_sets(tmp_path):
    assert files.shard_path(tmp_path / "mkqa.jsonl.gz", 2, 4) == tmp_path / "mkqa-00002-of-00004.jsonl.gz"
    assert files.split_suffix("questions.v1.jsonl") == ("questions", ".v1.jsonl")
    (tmp_path / "q-00000-of-00001.jsonl").write_text("")
    (tmp_path / "q-00000-of-00002.jsonl").write_text("")
    with pytest.raises(InputError, match=r"shard sets of different sizes \(1, 2\) are mixed"):
        files.expand_shards(tmp_path / "q.jsonl")


def test_empty_outputs_are_valid_files(tmp_path):
    assert F.write_dpr_json(tmp_path / "r.json", []) == [tmp_path / "r.json"]
    assert json.loads((tmp_path / "r.json").read_text()) == []
    assert list(F.read_dpr_json(tmp_path / "r.json")) == []
    paths = F.write_dpr_passages(tmp_path / "p.tsv", [], records_per_shard=10)
    assert [p.name for p in paths] == ["p-00000-of-00001.tsv"] and list(F.read_dpr_passages(tmp_path / "p.tsv")) == []


def test_json_list_streams_items_larger_than_the_read_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(reading, "_CHUNK", 64)
    results = [
        F.RetrievalResult(f"q{i}", "question " * 20, "ko", tuple(F.Context(f"p{i}-{k}", "t", "λόγος " * 30, float(k)) for k in range(5)))
        for i in range(7)
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps([F.retrieval_json(r) for r in results], indent=4, ensure_ascii=False), encoding="utf-8")
    assert list(F.read_dpr_json(path)) == results
    # A broken item is reported at the line where it starts, and where the error is.
    broken = path.read_text(encoding="utf-8").replace('"id": "q3"', '"id": q3', 1)
    path.write_text(broken, encoding="utf-8")
    lines = broken.splitlines()
    error_line = next(i for i, text in enumerate(lines, start=1) if '"id": q3' in text)
    with pytest.raises(InputError) as info:
        list(F.read_dpr_json(path))
    assert str(info.value) == f"{path}:{error_line - 1}: not valid JSON in list item 4 (Expecting value at line {error_line})"


def test_seen_ids_finds_every_repeat_with_its_first_place():
    rng = np.random.default_rng(0)
    seen = SeenIds()
    reference: dict[int, int] = {}
    line = 1
    for _ in range(40):
        keys = rng.integers(0, 3000, size=rng.integers(1, 300)).astype(np.int64)
        lines = np.arange(line, line + len(keys), dtype=np.int64)
        line += len(keys)
        first = seen.check_and_add(keys, lines)
        expected = []
        for k, ln in zip(keys.tolist(), lines.tolist()):
            expected.append(reference.get(k, 0))
            reference.setdefault(k, ln)
        assert first.tolist() == expected
    assert len(seen._keys) <= 12  # runs stay logarithmic in the number of ids


def test_id_keys_are_exact_for_integer_ids_and_disjoint_from_string_ids():
    assert id_key("21015324") == 21015324 and id_key("0") == 0
    for text in ["007", "-3", "wiki:12", "١٢", "ar_12_3"]:
        assert id_key(text) < 0


_texts = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(lambda t: t.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(_texts, st.lists(_texts, max_size=4)), max_size=6, unique_by=lambda item: item[0]),
    st.integers(1, 50),
    st.sampled_from([None, 1, 2]),
)
def test_json_list_items_survive_any_chunking_and_indentation(tmp_path, monkeypatch, entries, chunk, indent):
    monkeypatch.setattr(reading, "_CHUNK", chunk)
    predictions = [F.XorPrediction(qid, "te", tuple(texts)) for qid, texts in entries]
    path = tmp_path / "pred.json"
    path.write_text(json.dumps([F.xor_prediction_json(p) for p in predictions], indent=indent, ensure_ascii=False), encoding="utf-8")
    assert list(F.read_xor_predictions(path)) == predictions
