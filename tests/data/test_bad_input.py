"""Each kind of bad input raises an InputError that names the file and the line and says what was
expected; with skip_invalid the bad records are skipped and counted per reason instead."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from umr_jax.data import formats as F
from umr_jax.data import validation as V
from umr_jax.errors import InputError

GOOD = {"id": "1", "question": "ما هي عاصمة اليابان؟", "lang": "ar", "answers": ["طوكيو"]}


def jsonl_bytes(*lines) -> bytes:
    out = []
    for line in lines:
        out.append(line if isinstance(line, bytes) else json.dumps(line, ensure_ascii=False).encode())
    return b"\n".join(out) + b"\n"


QUESTION_CASES = {
    "malformed line": (b'{"id": "2", "question": "x", ', V.MALFORMED, "not valid JSON"),
    "not an object": (b'["2", "x", "ar"]', V.MALFORMED, "expected a JSON object, got list"),
    "missing field": ({"id": "2", "question": "x"}, V.MISSING_FIELD, "missing field 'lang'; expected {id, question, lang, answers?}"),
    "wrong type": ({"id": "2", "question": 5, "lang": "ar"}, V.WRONG_TYPE, "field 'question' must be a string, got integer"),
    "wrong answers type": ({"id": "2", "question": "x", "lang": "ar", "answers": [1]}, V.WRONG_TYPE, "field 'answers' must be a list of strings"),
    "empty question": ({"id": "2", "question": "  ", "lang": "ar"}, V.EMPTY_TEXT, "empty 'question'; expected non-empty text"),
    "duplicate id": ({"id": "1", "question": "again", "lang": "ar"}, V.DUPLICATE_ID, "duplicate id '1' (first at"),
    "invalid UTF-8": (b'{"id": "2", "question": "\xff\xfe", "lang": "ar"}', V.INVALID_UTF8, "invalid UTF-8"),
    "unknown language": ({"id": "2", "question": "x", "lang": "jp"}, V.UNKNOWN_LANGUAGE, "unknown language code 'jp'"),
}


@pytest.mark.parametrize("case", sorted(QUESTION_CASES))
def test_bad_question_line_names_file_line_and_expectation(case, tmp_path):
    bad, reason, message = QUESTION_CASES[case]
    path = tmp_path / "questions.jsonl"
    path.write_bytes(jsonl_bytes(GOOD, {"id": "9", "question": "ok", "lang": "ja"}, bad))
    with pytest.raises(InputError) as info:
        list(F.read_questions(path))
    err = info.value
    assert (err.path, err.line, err.reason) == (str(path), 3, reason)
    assert str(err).startswith(f"{path}:3: ") and message in str(err)


@pytest.mark.parametrize("case", sorted(QUESTION_CASES))
def test_skip_invalid_counts_each_reason(case, tmp_path):
    bad, reason, _ = QUESTION_CASES[case]
    path = tmp_path / "questions.jsonl"
    path.write_bytes(jsonl_bytes(GOOD, bad, {"id": "9", "question": "ok", "lang": "ja"}, bad))
    skipped = V.SkippedRecords()
    kept = list(F.read_questions(path, skip_invalid=skipped))
    assert [q.id for q in kept] == ["1", "9"]
    assert skipped.counts == {reason: 2} and skipped.total == 2
    assert f"{path}:2: " in str(skipped.first[reason])
    assert skipped.summary_lines()[0].startswith(f"2 {reason} (first: {path}:2: ")


def test_skip_invalid_mixed_reasons(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(jsonl_bytes(GOOD, GOOD, b"nope", {"id": "3", "question": "", "lang": "ar"}, {"id": "4", "question": "x", "lang": "xx"}, {"id": "5", "question": "x", "lang": "ko"}))
    skipped = V.SkippedRecords()
    assert [q.id for q in F.read_questions(path, skip_invalid=skipped)] == ["1", "5"]
    assert dict(skipped.counts) == {V.DUPLICATE_ID: 1, V.MALFORMED: 1, V.EMPTY_TEXT: 1, V.UNKNOWN_LANGUAGE: 1}


def test_xor_variant_accepts_only_the_seven_languages(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(jsonl_bytes(GOOD, {"id": "2", "question": "Who?", "lang": "en"}))
    assert len(list(F.read_questions(path))) == 2
    with pytest.raises(InputError, match=r"q.jsonl:2: unknown language code 'en'; expected one of ar, bn, fi, ja, ko, ru, te"):
        list(F.read_questions(path, variant="full"))
    assert len(list(F.read_questions(path, variant="retrieve", known_languages={"ar", "en"}))) == 2


def test_duplicate_ids_far_apart_and_across_shards(tmp_path):
    """Duplicates are found across record batches and across the shards of one file."""
    questions = [F.Question(str(i), f"q{i}", "ko") for i in range(5000)]
    F.write_questions(tmp_path / "q.jsonl", questions + [F.Question("17", "again", "ko")], records_per_shard=3000)
    with pytest.raises(InputError) as info:
        list(F.read_questions(tmp_path / "q.jsonl"))
    assert str(info.value) == f"{tmp_path}/q-00001-of-00002.jsonl:2001: duplicate id '17' (first at {tmp_path}/q-00000-of-00002.jsonl:18); ids must be unique within a file"


def test_bad_dpr_tsv_rows(tmp_path):
    path = tmp_path / "p.tsv"
    cases = {
        b"2\tonly two columns\n": (V.MALFORMED, "expected 3 tab-separated columns (id, text, title), got 2"),
        b'2\t"unterminated\tT\n': (V.MALFORMED, "malformed TSV"),
        b'2\t"quoted" trailing\tT\n': (V.MALFORMED, "malformed TSV"),
        b"2\t \tT\n": (V.EMPTY_TEXT, "empty 'text'; expected non-empty passage text"),
        b"1\tsame id\tT\n": (V.DUPLICATE_ID, "duplicate id '1' (first at"),
        b"2\tbad \xc3\x28 bytes\tT\n": (V.INVALID_UTF8, "invalid UTF-8"),
    }
    for row, (reason, message) in cases.items():
        path.write_bytes(b"id\ttext\ttitle\n1\tgood\tT\n" + row)
        with pytest.raises(InputError) as info:
            list(F.read_dpr_passages(path))
        assert (info.value.line, info.value.reason) == (3, reason), row
        assert str(info.value).startswith(f"{path}:3: ") and message in str(info.value), row
    path.write_bytes(b"id\ttitle\ttext\n1\tT\tx\n")
    with pytest.raises(InputError, match=r"p.tsv:1: expected the header row 'id<TAB>text<TAB>title'"):
        list(F.read_dpr_passages(path))


def test_skipping_bad_tsv_rows_resumes_at_the_next_row(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_bytes(b"id\ttext\ttitle\n1\tgood\tT\n2\tbad \xff\tT\n3\t\"a\"b\tT\n4\tfine\tT\n")
    skipped = V.SkippedRecords()
    assert [p.id for p in F.read_dpr_passages(path, skip_invalid=skipped)] == ["1", "4"]
    assert dict(skipped.counts) == {V.INVALID_UTF8: 1, V.MALFORMED: 1}
    assert skipped.first[V.INVALID_UTF8].line == 3 and skipped.first[V.MALFORMED].line == 4


def test_bad_items_in_json_lists(tmp_path):
    path = tmp_path / "run.json"
    ctx = {"id": "p1", "title": "t", "text": "x", "score": 1.0}
    items = [
        {"id": "q1", "question": "a", "lang": "ar", "ctxs": [ctx]},
        {"id": "q2", "question": "b", "lang": "ar", "ctxs": [ctx, dict(ctx, id="p2", score="high")]},
    ]
    path.write_text("[\n" + ",\n".join(json.dumps(i) for i in items) + "\n]")
    with pytest.raises(InputError) as info:
        list(F.read_dpr_json(path))
    assert str(info.value) == f"{path}:3: ctxs[1]: field 'score' must be a number, got the string 'high'"
    items[1]["ctxs"] = [ctx, ctx]
    path.write_text(json.dumps(items, indent=2))
    with pytest.raises(InputError, match=r"run.json:\d+: passage 'p1' appears twice in ctxs of question 'q2'"):
        list(F.read_dpr_json(path))
    path.write_text('[{"id": "q1", "lang": "ar", "ctxs": []},\n {"id": "q2", "lang": "ar" "ctxs": []}]')
    with pytest.raises(InputError, match=r"predictions? ?|run.json:2: not valid JSON in list item 2"):
        list(F.read_xor_predictions(path))
    path.write_bytes(b'[{"id": "q1", "lang": "ar", "ctxs": ["ok"]},\n{"id": "q2", "lang": "ar", "ctxs": ["\xff"]}]')
    skipped = V.SkippedRecords()
    assert [p.id for p in F.read_xor_predictions(path, skip_invalid=skipped)] == ["q1"]
    assert skipped.first[V.INVALID_UTF8].line == 2
    path.write_text('{"id": "q1"}')
    with pytest.raises(InputError, match=r"run.json:1: expected a JSON list"):
        list(F.read_xor_predictions(path))


def test_json_list_read_as_json_lines_gets_a_hint(tmp_path):
    path = tmp_path / "run.json"
    F.write_dpr_json(path, [])
    path.write_text('[{"id": "q1",\n"question": "x"}]')
    with pytest.raises(InputError, match="this looks like a JSON list: is it dpr-json or xor-predictions"):
        list(F.read_retrieval(path))


def test_bad_qrels_and_trec_lines(tmp_path):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t0\n")
    with pytest.raises(InputError, match=r"qrels.tsv:3: duplicate id 'q1\\td1'"):
        list(F.read_beir_qrels(qrels))
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(InputError, match=r"qrels.tsv:2: score must be an integer, got 'high'"):
        list(F.read_beir_qrels(qrels))
    qrels.write_text("qid\tdocid\trel\n")
    with pytest.raises(InputError, match=r"qrels.tsv:1: expected the header row"):
        list(F.read_beir_qrels(qrels))
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 d1 1 2.5 t\nq1 Q0 d2 two 2.0 t\n")
    with pytest.raises(InputError, match=r"run.trec:2: rank must be an integer, got 'two'"):
        list(F.read_trec_run(run))
    run.write_text("q1 Q0 d1 1 2.5\n")
    with pytest.raises(InputError, match=r"run.trec:1: expected 6 fields 'qid Q0 docid rank score tag', got 5"):
        list(F.read_trec_run(run))


def test_bad_mkqa_records(tmp_path):
    path = tmp_path / "mkqa.jsonl"
    base = {"example_id": 1, "query": "q", "queries": {"en": "q"}, "answers": {"en": [{"type": "entity", "text": "a"}]}}
    cases = [
        (dict(base, queries={"xx": "q"}), V.UNKNOWN_LANGUAGE, "unknown language code 'xx'"),
        (dict(base, answers={"en": [{"type": "guess", "text": "a"}]}), V.MALFORMED, "unknown answer type 'guess'"),
        (dict(base, answers={"en": {"type": "entity"}}), V.WRONG_TYPE, "answers['en'] must be a list, got object"),
        (dict(base, queries={"en": ""}), V.EMPTY_TEXT, "empty queries['en']"),
        ({k: v for k, v in base.items() if k != "example_id"}, V.MISSING_FIELD, "missing field 'example_id'"),
    ]
    for bad, reason, message in cases:
        if "example_id" in bad:
            bad = dict(bad, example_id=2)
        path.write_text(json.dumps(base) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(InputError) as info:
            list(F.read_mkqa(path))
        assert (info.value.line, info.value.reason) == (2, reason) and message in str(info.value), message


def test_bad_pairs_parquet_rows_name_the_row(tmp_path):
    path = tmp_path / "pairs.parquet"
    pq.write_table(pa.table({"query": ["q1", "q2", "q3"], "positive": ["p1", "", "p3"], "lang": ["pt", "pt", "pt"]}), path)
    with pytest.raises(InputError) as info:
        list(F.read_pairs(path, batch_size=2))
    assert str(info.value) == f"{path}:2: empty 'positive'; expected non-empty text"
    pq.write_table(pa.table({"query": ["q1"], "lang": ["pt"]}), path)
    with pytest.raises(InputError, match=r"pairs.parquet: missing column\(s\) positive"):
        list(F.read_pairs(path))


def test_missing_file_and_incomplete_shards(tmp_path):
    with pytest.raises(InputError, match=r"nope.jsonl: no such file"):
        list(F.read_questions(tmp_path / "nope.jsonl"))
    F.write_questions(tmp_path / "q.jsonl", [F.Question(str(i), "x", "ar") for i in range(3)], num_shards=3)
    (tmp_path / "q-00001-of-00003.jsonl").unlink()
    with pytest.raises(InputError, match=r"q.jsonl: incomplete shard set: missing q-00001-of-00003.jsonl"):
        list(F.read_questions(tmp_path / "q.jsonl"))


def test_corrupt_parquet_and_truncated_gzip_are_one_line_errors(tmp_path):
    F.write_pairs(tmp_path / "pairs.parquet", [F.Pair(f"query {i} " * 20, "passage " * 30, "ar") for i in range(5000)])
    data = (tmp_path / "pairs.parquet").read_bytes()
    (tmp_path / "corrupt.parquet").write_bytes(data[:4] + b"x" * (len(data) // 2) + data[4 + len(data) // 2:])
    with pytest.raises(InputError) as info:
        list(F.read_pairs(tmp_path / "corrupt.parquet"))
    assert str(info.value).startswith(f"{tmp_path}/corrupt.parquet: corrupt parquet file (") and "\n" not in str(info.value)
    (tmp_path / "short.parquet").write_bytes(data[:1000])
    with pytest.raises(InputError, match=r"short.parquet: not a readable parquet file"):
        list(F.read_pairs(tmp_path / "short.parquet"))
    F.write_dpr_json(tmp_path / "run.json.gz", [F.RetrievalResult("q", "x", "ar", ())])
    (tmp_path / "cut.json.gz").write_bytes((tmp_path / "run.json.gz").read_bytes()[:-10])
    with pytest.raises(InputError, match=r"cut.json.gz: cannot read \(Compressed file ended"):
        list(F.read_dpr_json(tmp_path / "cut.json.gz"))
