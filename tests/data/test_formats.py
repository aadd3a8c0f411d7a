"""Every reader reads back what its writer wrote, and reads files written the way the field's
tools write them (plain json / csv, DPR's quoting, MKQA's gzip, pyarrow parquet)."""

from __future__ import annotations

import csv
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from umr_jax.data import formats as F
from tests.data import samples


@pytest.mark.parametrize("name", sorted(samples.ALL))
def test_round_trip(name, tmp_path):
    records, file_name = samples.ALL[name]
    path = tmp_path / file_name
    fmt = F.FORMATS[name]
    assert fmt.write(path, records) == [path]
    assert list(fmt.read(path)) == records


@pytest.mark.parametrize("name", ["xor-questions", "dpr-passages", "dpr-json", "trec-run", "beir-qrels"])
def test_round_trip_sharded_round_robin_and_in_order(name, tmp_path):
    records, file_name = samples.ALL[name]
    fmt = F.FORMATS[name]
    paths = fmt.write(tmp_path / "rr" / file_name, records, num_shards=3)
    assert [p.name.split("-", 1)[1][:14] for p in paths] == ["00000-of-00003", "00001-of-00003", "00002-of-00003"]
    assert sorted(map(repr, fmt.read(tmp_path / "rr" / file_name))) == sorted(map(repr, records))
    paths = fmt.write(tmp_path / "ordered" / file_name, records, records_per_shard=2)
    assert len(paths) == (len(records) + 1) // 2
    assert list(fmt.read(tmp_path / "ordered" / file_name)) == records


def test_pairs_parquet_round_trip_and_pyarrow_written_file(tmp_path):
    F.write_pairs(tmp_path / "pairs.parquet", samples.PAIRS)
    assert list(F.read_pairs(tmp_path / "pairs.parquet")) == samples.PAIRS
    table = pa.table({"query": ["q1", "q2"], "positive": ["p1", "p2"], "lang": ["pt", "es"], "negatives": [["n1", "n2"], None]})
    pq.write_table(table, tmp_path / "plain.parquet")
    assert list(F.read_pairs(tmp_path / "plain.parquet", batch_size=1)) == [F.Pair("q1", "p1", "pt", ("n1", "n2")), F.Pair("q2", "p2", "es")]


def test_xor_questions_as_released(tmp_path):
    lines = [
        {"id": "-1002350311829496286", "question": "ما هي عاصمة اليابان؟", "answers": ["طوكيو"], "lang": "ar"},
        {"id": "7181349183215124367", "question": "東京タワーの高さは？", "answers": "333メートル", "lang": "ja"},
        {"id": "8", "question": "Kuka?", "lang": "fi", "extra": {"ignored": True}},
    ]
    path = tmp_path / "xor_dev_retrieve_eng_span_v1_1.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines) + "\n", encoding="utf-8")
    assert list(F.read_questions(path, variant="retrieve")) == [
        F.Question("-1002350311829496286", "ما هي عاصمة اليابان؟", "ar", ("طوكيو",)),
        F.Question("7181349183215124367", "東京タワーの高さは？", "ja", ("333メートル",)),
        F.Question("8", "Kuka?", "fi", None),
    ]


def test_dpr_tsv_as_in_psgs_w100(tmp_path):
    # The released file quotes texts and doubles inner quotes; titles are bare.
    path = tmp_path / "psgs_w100.tsv"
    path.write_bytes(
        'id\ttext\ttitle\n1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet"\tAaron\n2\t"God at Sinai granted Aaron the priesthood"\tAaron\n'.encode()
    )
    assert list(F.read_dpr_passages(path)) == [
        F.Passage("1", "Aaron", 'Aaron Aaron ( or ; "Ahärôn") is a prophet'),
        F.Passage("2", "Aaron", "God at Sinai granted Aaron the priesthood"),
    ]


def test_dpr_tsv_written_by_us_reads_with_dprs_csv_reader(tmp_path):
    F.write_dpr_passages(tmp_path / "p.tsv", samples.PASSAGES)
    with open(tmp_path / "p.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["id", "text", "title"]
    assert [F.Passage(r[0], r[2], r[1]) for r in rows[1:]] == samples.PASSAGES


def test_dpr_json_as_dpr_writes_it(tmp_path):
    # DPR's dense_retriever writes an indented JSON list with string scores and has_answer.
    data = [
        {
            "id": "q1",
            "question": "who sings",
            "answers": ["Dave Edmunds"],
            "lang": "en",
            "ctxs": [
                {"id": "11", "title": "Song", "text": "sung by Dave Edmunds", "score": "80.52", "has_answer": True},
                {"id": "12", "title": "Other", "text": "unrelated", "score": 79, "has_answer": False},
            ],
        }
    ]
    path = tmp_path / "dpr.json"
    path.write_text(json.dumps(data, indent=4), encoding="utf-8")
    (result,) = F.read_dpr_json(path)
    assert result.ctxs == (F.Context("11", "Song", "sung by Dave Edmunds", 80.52, True), F.Context("12", "Other", "unrelated", 79.0, False))
    assert result.answers == ("Dave Edmunds",) and result.lang == "en"


def test_xor_prediction_file_as_the_official_script_reads_it(tmp_path):
    F.write_xor_predictions(tmp_path / "pred.json", samples.PREDICTIONS)
    loaded = json.loads((tmp_path / "pred.json").read_text(encoding="utf-8"))
    assert loaded == [{"id": p.id, "lang": p.lang, "ctxs": list(p.ctxs)} for p in samples.PREDICTIONS]
    assert loaded[0]["ctxs"] == [c.text for c in samples.RESULTS[0].ctxs]


def test_trec_run_as_text(tmp_path):
    path = tmp_path / "run.trec"
    F.write_trec_run(path, samples.TREC)
    first = path.read_text().splitlines()[0].split()
    assert first == ["-1002350311829496286", "Q0", "4", "1", "81.25", "mdpr"]
    path.write_text("q1 Q0 d1 1 12.5 bm25\n\nq1 0 d2 2 -3 bm25\n")
    assert list(F.read_trec_run(path)) == [F.TrecRunEntry("q1", "d1", 1, 12.5, "bm25"), F.TrecRunEntry("q1", "d2", 2, -3.0, "bm25")]


def test_beir_files_as_released(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(
        json.dumps({"_id": "d1", "title": "T", "text": "body", "metadata": {"url": "u"}}) + "\n" + json.dumps({"_id": 7, "text": "no title"}) + "\n"
    )
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what", "metadata": {}}) + "\n")
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\t7\t0\n")
    assert list(F.read_beir_corpus(tmp_path / "corpus.jsonl")) == [F.Passage("d1", "T", "body"), F.Passage("7", "", "no title")]
    assert list(F.read_beir_queries(tmp_path / "queries.jsonl")) == [F.Query("q1", "what")]
    assert list(F.read_beir_qrels(tmp_path / "test.tsv")) == [F.Qrel("q1", "d1", 1), F.Qrel("q1", "7", 0)]


def test_mkqa_as_released_gzip(tmp_path):
    line = {
        "example_id": 563260143484355911,
        "queries": {"en": "who sings i hear you knocking", "ru": "кто поет i hear you knocking", "zh_cn": "是谁演唱的"},
        "query": "who sings i hear you knocking",
        "answers": {
            "en": [{"type": "entity", "entity": "Q545186", "text": "Dave Edmunds", "aliases": []}],
            "ru": [{"type": "entity", "entity": "Q545186", "text": "Эдмундс, Дэйв", "aliases": ["Эдмундс", "Дэйв Эдмундс"]}],
            "zh_cn": [{"type": "entity", "text": "戴维·埃德蒙兹 ", "entity": "Q545186"}],
        },
    }
    path = tmp_path / "mkqa.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")
    (example,) = F.read_mkqa(path)
    assert example.example_id == "563260143484355911"
    assert example.answers["ru"] == (F.MkqaAnswer("entity", "Эдмундс, Дэйв", "Q545186", ("Эдмундс", "Дэйв Эдмундс")),)
    questions = F.mkqa_to_questions(example, languages={"ru", "zh_cn"})
    assert questions == [
        F.Question("563260143484355911-ru", "кто поет i hear you knocking", "ru", ("Эдмундс, Дэйв", "Эдмундс", "Дэйв Эдмундс")),
        F.Question("563260143484355911-zh_cn", "是谁演唱的", "zh_cn", ("戴维·埃德蒙兹 ",)),
    ]
    # Written back, the id is a JSON integer again, as in the release.
    F.write_mkqa(tmp_path / "out.jsonl", [example])
    assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))["example_id"] == 563260143484355911


def test_unanswerable_mkqa_gives_questions_without_answers():
    questions = F.mkqa_to_questions(samples.MKQA[1])
    assert [q.answers for q in questions] == [(), ()]


def test_conversions_between_retrieval_formats(tmp_path):
    F.write_retrieval(tmp_path / "run.jsonl", samples.RESULTS)
    report = F.convert("retrieval", "dpr-json", tmp_path / "run.jsonl", tmp_path / "run.json")
    assert (report.read, report.written) == (2, 2)
    report = F.convert("dpr-json", "retrieval", tmp_path / "run.json", tmp_path / "back.jsonl")
    assert list(F.read_retrieval(tmp_path / "back.jsonl")) == samples.RESULTS
    F.convert("retrieval", "trec-run", tmp_path / "run.jsonl", tmp_path / "run.trec", tag="mdpr")
    assert list(F.read_trec_run(tmp_path / "run.trec")) == samples.TREC
    F.convert("retrieval", "xor-predictions", tmp_path / "run.jsonl", tmp_path / "pred.json")
    assert list(F.read_xor_predictions(tmp_path / "pred.json")) == samples.PREDICTIONS


def test_conversions_between_passage_formats(tmp_path):
    F.write_dpr_passages(tmp_path / "p.tsv", samples.PASSAGES)
    F.convert("dpr-passages", "passages-jsonl", tmp_path / "p.tsv", tmp_path / "p.jsonl")
    F.convert("passages-jsonl", "beir-corpus", tmp_path / "p.jsonl", tmp_path / "corpus.jsonl")
    F.convert("beir-corpus", "dpr-passages", tmp_path / "corpus.jsonl", tmp_path / "again.tsv", records_per_shard=3)
    assert list(F.read_dpr_passages(tmp_path / "again.tsv")) == samples.PASSAGES
    assert (tmp_path / "again.tsv").exists() is False and (tmp_path / "again-00001-of-00002.tsv").exists()


def test_question_conversions(tmp_path):
    F.write_beir_queries(tmp_path / "queries.jsonl", samples.BEIR_QUERIES)
    F.convert("beir-queries", "xor-questions", tmp_path / "queries.jsonl", tmp_path / "q.jsonl", lang="de")
    assert list(F.read_questions(tmp_path / "q.jsonl")) == [F.Question("q1", "wie spät ist es", "de"), F.Question("q2", "what is dense retrieval", "de")]
    with pytest.raises(ValueError, match="lang"):
        F.convert("beir-queries", "xor-questions", tmp_path / "queries.jsonl", tmp_path / "q2.jsonl")
    F.write_mkqa(tmp_path / "mkqa.jsonl", samples.MKQA)
    F.convert("mkqa", "xor-questions", tmp_path / "mkqa.jsonl", tmp_path / "mkqa_q.jsonl", languages=["ja"])
    assert [q.id for q in F.read_questions(tmp_path / "mkqa_q.jsonl")] == ["563260143484355911-ja", "-7449157003522518870-ja"]
    with pytest.raises(ValueError, match="no conversion from trec-run to retrieval"):
        F.convert("trec-run", "retrieval", tmp_path / "x", tmp_path / "y")


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1).filter(lambda s: s.strip())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_text, st.text(st.characters(blacklist_categories=("Cs",)))), min_size=1, max_size=5))
def test_dpr_tsv_round_trips_any_text(tmp_path, texts_and_titles):
    """csv quoting keeps tabs, quotes, CR/LF and any Unicode in texts and titles."""
    passages = [F.Passage(str(i), title, text) for i, (text, title) in enumerate(texts_and_titles)]
    F.write_dpr_passages(tmp_path / "any.tsv", passages)
    assert list(F.read_dpr_passages(tmp_path / "any.tsv")) == passages


def test_a_leading_byte_order_mark_is_ignored(tmp_path):
    (tmp_path / "q.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "1", "question": "x", "lang": "ko"}).encode() + b"\n")
    assert list(F.read_questions(tmp_path / "q.jsonl")) == [F.Question("1", "x", "ko")]
    (tmp_path / "p.tsv").write_bytes(b"\xef\xbb\xbfid\ttext\ttitle\n1\tx\tT\n")
    assert list(F.read_dpr_passages(tmp_path / "p.tsv")) == [F.Passage("1", "T", "x")]
    (tmp_path / "pred.json").write_bytes(b"\xef\xbb\xbf" + json.dumps([{"id": "1", "lang": "ko", "ctxs": ["x"]}]).encode())
    assert list(F.read_xor_predictions(tmp_path / "pred.json")) == [F.XorPrediction("1", "ko", ("x",))]


def test_trec_qrels_and_repeated_judgements(tmp_path):
    path = tmp_path / "qrels.txt"
    path.write_text("q1 0 d1 1\nq1 Q0 d2 0\n\nq2\t0\td1\t2\nq1 0 d1 3\n")
    with pytest.raises(F.InputError, match=r"qrels.txt:5: duplicate id 'q1\\td1' \(first at .*qrels.txt:1\)"):
        list(F.read_trec_qrels(path))
    assert list(F.read_trec_qrels(path, unique=False)) == [F.Qrel("q1", "d1", 1), F.Qrel("q1", "d2", 0), F.Qrel("q2", "d1", 2), F.Qrel("q1", "d1", 3)]
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td1\t0\n")
    with pytest.raises(F.InputError, match=r"test.tsv:3: duplicate id"):
        list(F.read_beir_qrels(tmp_path / "test.tsv"))
    assert list(F.read_beir_qrels(tmp_path / "test.tsv", unique=False)) == [F.Qrel("q1", "d1", 1), F.Qrel("q1", "d1", 0)]


def test_json_items_reads_json_lines_and_json_lists_alike(tmp_path):
    records = [{"id": "q1", "lang": "ja"}, {"id": 2, "lang": "ko"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "b.json").write_bytes(b"\xef\xbb\xbf \n" + json.dumps(records, indent=1).encode())
    with gzip.open(tmp_path / "c.json.gz", "wt") as f:
        json.dump(records, f)
    assert [F.first_char(tmp_path / name) for name in ("a.jsonl", "b.json", "c.json.gz")] == ["{", "[", "["]
    for name in ("a.jsonl", "b.json", "c.json.gz"):
        assert [item for _, _, item in F.json_items(tmp_path / name)] == records
    assert [line for _, line, _ in F.json_items(tmp_path / "b.json")] == [3, 7]
    (tmp_path / "blank.jsonl").write_text("\n \n")
    assert F.first_char(tmp_path / "blank.jsonl") == "" and list(F.json_items(tmp_path / "blank.jsonl")) == []


def _released_retrieval_file(path, scores_as_strings: bool, id_key: str) -> None:
    """A retrieval file as the released UMR code writes it: one JSON list, indent=4;
    `dense_retriever.py` uses `q_id` and string scores, `upr-multi.py` `id` and numbers."""
    score = (lambda x: str(x)) if scores_as_strings else (lambda x: x)
    records = [{id_key: "-1234", "question": "東京タワーの高さは？", "answers": ["333 m"], "lang": "ja",
                "ctxs": [{"id": "7", "title": "Tokyo Tower", "text": "It is 333 m tall.", "score": score(12.5), "has_answer": True},
                         {"id": "9", "title": "Paris", "text": "The capital of France.", "score": score(-3.25), "has_answer": False}]},
               {id_key: "88", "question": "Who?", "answers": [], "lang": "fi",
                "ctxs": [{"id": "1", "title": "", "text": "Nobody.", "score": score(0.5), "has_answer": False}]}]
    path.write_text(json.dumps(records, indent=4) + "\n", encoding="utf-8")


def test_the_released_retrievers_q_id_and_the_rerankers_id_both_read(tmp_path):
    from umr_jax.evaluation import readers

    _released_retrieval_file(tmp_path / "retrieved.json", scores_as_strings=True, id_key="q_id")
    _released_retrieval_file(tmp_path / "reranked.json", scores_as_strings=False, id_key="id")
    for name in ("retrieved.json", "reranked.json"):
        results = list(F.read_dpr_json(tmp_path / name))
        assert [r.id for r in results] == ["-1234", "88"]
        assert [c.score for c in results[0].ctxs] == [12.5, -3.25]
        assert [c.has_answer for c in results[0].ctxs] == [True, False]
        assert readers.read_run(tmp_path / name).rankings == {"-1234": ["7", "9"], "88": ["1"]}
    both = {"id": "a", "q_id": "b", "question": "x", "lang": "ja", "ctxs": []}
    (tmp_path / "both.jsonl").write_text(json.dumps(both) + "\n")
    with pytest.raises(F.InputError, match=r"both.jsonl:1: 'id' 'a' and 'q_id' 'b' differ; expected one question id"):
        list(F.read_retrieval(tmp_path / "both.jsonl"))
    (tmp_path / "same.jsonl").write_text(json.dumps(dict(both, q_id="a")) + "\n")
    assert [r.id for r in F.read_retrieval(tmp_path / "same.jsonl")] == ["a"]
