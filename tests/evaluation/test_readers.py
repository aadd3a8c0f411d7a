"""Readers: both prediction formats, and `file:line: what was expected` for bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from umr_jax.data.formats import XorPrediction
from umr_jax.errors import InputError
from umr_jax.evaluation import readers


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_official_prediction_list_and_retrieval_jsonl_give_the_same_predictions(tmp_path):
    official = write(tmp_path, "pred.json", json.dumps([{"id": "q1", "lang": "ja", "ctxs": ["first", "second"]}]))
    ours = write(
        tmp_path,
        "pred.jsonl",
        '{"id": "q1", "question": "?", "lang": "ja", "ctxs": [{"id": "9", "title": "T", "text": "first", "score": 2.0}, {"id": "3", "title": "U", "text": "second", "score": 1.0}]}\n',
    )
    expected = [XorPrediction("q1", "ja", ("first", "second"))]
    assert list(readers.iter_xor_predictions(official)) == expected
    assert list(readers.iter_xor_predictions(ours)) == expected


def test_gold_keeps_the_last_answers_of_a_repeated_id(tmp_path):
    gold = write(tmp_path, "gold.jsonl", '{"id": "q1", "answers": ["a"]}\n\n{"id": "q1", "answers": ["b"], "lang": "ja"}\n')
    assert readers.read_xor_gold_answers(gold) == {"q1": ["b"]}


def test_xor_full_predictions_keys_are_cut_at_the_last_underscore(tmp_path):
    path = write(tmp_path, "pred.json", json.dumps({"ja_123": "東京", "456": "x", "a_b_789": "y"}))
    assert readers.read_xor_full_predictions(path) == {"123": "東京", "456": "x", "789": "y"}


def test_xor_full_gold_accepts_a_bare_string_answer(tmp_path):
    path = write(tmp_path, "gold.jsonl", '{"id": "1", "lang": "ja", "answers": "1999年"}\n')
    assert readers.read_xor_full_gold(path) == [readers.XorFullGold("1", "ja", ["1999年"])]


@pytest.mark.parametrize(
    "name, text, reader, expected",
    [
        ("gold.jsonl", '{"id": "q1", "answers": ["a"]}\n{"id": "q2", "answers": [\n', readers.read_xor_gold_answers, "gold.jsonl:2: not valid JSON"),
        ("gold.jsonl", '{"id": "q1"}\n', readers.read_xor_gold_answers, "gold.jsonl:1: missing field 'answers'; expected {id, question, lang, answers}"),
        ("gold.jsonl", '{"id": "q1", "answers": "a"}\n', readers.read_xor_gold_answers, "gold.jsonl:1: field 'answers' must be a list of strings, got string"),
        ("gold.jsonl", '{"id": "q1", "answers": ["a", 3]}\n', readers.read_xor_gold_answers, "gold.jsonl:1: field 'answers' must be a list of strings, got a list holding integer 3"),
        ("gold.jsonl", '{"id": true, "answers": []}\n', readers.read_xor_gold_answers, "gold.jsonl:1: field 'id' must be a string or integer id, got boolean"),
        ("gold.jsonl", '["q1"]\n', readers.read_xor_gold_answers, "gold.jsonl:1: list item 1: expected a JSON object"),
        ("pred.jsonl", '{"id": "q1", "lang": "ja", "ctxs": [{"id": "1"}]}\n', readers.read_xor_gold_answers, "pred.jsonl:1: missing field 'answers'"),
        ("pred.json", '[{"id": "q1", "lang": "ja", "ctxs": ["a"]},\n {"id": "q2", "ctxs": []}]', lambda p: list(readers.iter_xor_predictions(p)), "pred.json:2: missing field 'lang'"),
        ("pred.jsonl", '{"id": "q1", "lang": "ja", "ctxs": [{"id": "1", "title": "t"}]}\n', lambda p: list(readers.iter_xor_predictions(p)), "pred.jsonl:1: ctxs[0] has no string 'text'"),
        ("full.json", '["a"]', readers.read_xor_full_predictions, "full.json: a JSON object {question id: answer} is expected, got list"),
        ("full.json", '{"1": 5}', readers.read_xor_full_predictions, "full.json: the answer for '1' must be a string, got integer"),
        ("qrels.txt", "q1 0 d1 1\nq1 0 d2\n", readers.read_qrels, "qrels.txt:2: expected 4 fields 'qid iteration docid relevance', got 3"),
        ("qrels.txt", "q1 0 d1 high\n", readers.read_qrels, "qrels.txt:1: relevance must be an integer, got 'high'"),
        ("run.trec", "q1 Q0 d1 1 0.5\n", readers.read_run, "run.trec:1: expected 6 fields 'qid Q0 docid rank score tag', got 5"),
        ("run.trec", "q1 Q0 d1 1 x t\n", readers.read_run, "run.trec:1: score must be a number, got 'x'"),
        ("run.trec", "q1 Q0 d1 1 1 t\nq1 Q0 d1 2 0 t\n", readers.read_run, "run.trec:2: duplicate id 'q1\\td1' (first at "),
        ("run.jsonl", '{"id": "q1", "ctxs": [{"id": "a"}, {"id": "a"}]}\n', readers.read_run, "run.jsonl:1: passage 'a' appears twice in ctxs of question 'q1'"),
        ("queries.jsonl", '{"id": "q1", "text": "?"}\n', readers.read_query_langs, "queries.jsonl:1: missing field 'lang'"),
    ],
)
def test_bad_input_names_file_line_and_expectation(tmp_path, name, text, reader, expected):
    path = write(tmp_path, name, text)
    with pytest.raises(InputError) as err:
        reader(path)
    assert str(err.value).startswith(str(tmp_path / name)[: -len(name)] + expected)


def test_xor_full_gold_language_must_be_in_the_official_table(tmp_path):
    path = write(tmp_path, "gold.jsonl", '{"id": "1", "lang": "ja", "answers": ["a"]}\n{"id": "2", "lang": "es", "answers": ["a"]}\n')
    with pytest.raises(InputError, match=r"gold.jsonl:2: language 'es' is not one of"):
        readers.read_xor_full_gold(path, langs=("ja", "ko"))


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="absent.jsonl: no such file"):
        readers.read_xor_gold_answers(tmp_path / "absent.jsonl")


def test_qrels_keep_the_last_of_a_repeated_judgement(tmp_path):
    trec = write(tmp_path, "qrels.txt", "q1 0 d1 1\nq1 0 d1 0\n")
    assert readers.read_qrels(trec) == {"q1": {"d1": 0}}
    beir = write(tmp_path, "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td1\t1\n")
    assert readers.read_qrels(beir) == {"q1": {"d1": 1}}
    with pytest.raises(InputError, match=r"empty.txt: no relevance judgements found"):
        readers.read_qrels(write(tmp_path, "empty.txt", "\n"))
    with pytest.raises(InputError, match=r"five.txt:1: expected TREC qrels"):
        readers.read_qrels(write(tmp_path, "five.txt", "q1 0 d1 1 x\n"))


def test_ids_are_strings_whether_the_file_writes_them_as_numbers_or_not(tmp_path):
    gold = write(tmp_path, "gold.jsonl", '{"id": 7, "answers": ["a"]}\n{"id": "8", "answers": ["b"]}\n')
    assert readers.read_xor_gold_answers(gold) == {"7": ["a"], "8": ["b"]}
    predictions = write(tmp_path, "pred.json", json.dumps([{"id": 7, "lang": "xx", "ctxs": []}]))
    assert list(readers.iter_xor_predictions(predictions)) == [XorPrediction("7", "xx", ())]


def test_runs_and_predictions_from_dpr_json_lists_shards_and_gzip(tmp_path):
    # DPR's own output: a JSON list, no lang, scores as strings; evaluation needs only ids and texts.
    dpr = [{"id": "q1", "question": "?", "answers": ["a"], "ctxs": [{"id": "5", "title": "T", "text": "x", "score": "1.5", "has_answer": False}]}]
    write(tmp_path, "dpr.json", json.dumps(dpr))
    assert readers.read_run(tmp_path / "dpr.json") == readers.RankedRun({"q1": ["5"]}, {})
    shards = [{"id": f"q{i}", "lang": "ja", "ctxs": [f"t{i}"]} for i in range(2)]
    for i, record in enumerate(shards):
        write(tmp_path, f"pred-0000{i}-of-00002.jsonl", json.dumps(record) + "\n")
    assert [p.id for p in readers.iter_xor_predictions(tmp_path / "pred.jsonl")] == ["q0", "q1"]
    with gzip.open(tmp_path / "run.trec.gz", "wt") as f:
        f.write("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 0.7 t\n")
    assert readers.read_run(tmp_path / "run.trec.gz").rankings == {"q1": ["d2", "d1"]}
