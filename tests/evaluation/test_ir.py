"""nDCG@10, Recall@100, MRR@10 through ir_measures, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from umr_jax.evaluation import ir, readers

# q1: graded judgements, ranked d2 (rel 0), d3 (rel 2), d1 (rel 1).
# q2: its one relevant document at rank 11: inside Recall@100, outside nDCG@10 and MRR@10.
# q3: judged but absent from the run: scores 0.
QRELS = {"q1": {"d1": 1, "d2": 0, "d3": 2}, "q2": {"d5": 1}, "q3": {"d7": 1}}
RANKINGS = {"q1": ["d2", "d3", "d1"], "q2": [f"x{i}" for i in range(10)] + ["d5"], "q9": ["d1"]}

# DCG with gain = grade and discount log2(rank + 1), as trec_eval computes it.
Q1_NDCG = (2 / math.log2(3) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))


def test_per_query_scores_by_hand():
    scores = ir.per_query_scores(QRELS, RANKINGS)
    assert set(scores) == {"q1", "q2", "q3"}
    assert scores["q1"]["ndcg@10"] == pytest.approx(Q1_NDCG, abs=1e-12)
    assert scores["q1"]["recall@100"] == 1.0 and scores["q1"]["mrr@10"] == 0.5
    assert scores["q2"] == {"ndcg@10": 0.0, "recall@100": 1.0, "mrr@10": 0.0}
    assert scores["q3"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}


def test_per_language_means_and_macro_average():
    report = ir.ir_scores(QRELS, RANKINGS, {"q1": "ar", "q2": "ar", "q3": "bn"})
    assert report.scores["ndcg@10"]["ar"] == pytest.approx(Q1_NDCG / 2, abs=1e-12)
    assert report.scores["ndcg@10"]["average"] == pytest.approx(Q1_NDCG / 4, abs=1e-12)
    assert report.scores["recall@100"] == {"ar": 1.0, "bn": 0.0, "average": 0.5}
    assert report.scores["mrr@10"] == {"ar": 0.25, "bn": 0.0, "average": 0.125}
    assert report.queries == {"ar": 2, "bn": 1}
    assert report.missing_run == 1 and report.run_queries_without_qrels == 1


def test_without_languages_all_queries_form_one_group():
    report = ir.ir_scores(QRELS, RANKINGS)
    assert report.scores["recall@100"] == {"all": pytest.approx(2 / 3), "average": pytest.approx(2 / 3)}
    assert report.queries == {"all": 3}


def test_queries_with_unknown_language_are_grouped_as_unknown():
    report = ir.ir_scores(QRELS, RANKINGS, {"q1": "ar", "q2": "ar"})
    assert report.queries == {"ar": 2, "unknown": 1}


def test_trec_run_is_ranked_like_trec_eval(tmp_path):
    # Equal scores: trec_eval breaks the tie by document id in reverse string order, so "b"
    # ranks above the relevant "a"; the rank column is ignored.
    run = tmp_path / "run.trec"
    run.write_text("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0 t\nq1 Q0 c 3 0.5 t\nq2 Q0 z 1 -2 t\n")
    ranked = readers.read_run(run)
    assert ranked.rankings == {"q1": ["b", "a", "c"], "q2": ["z"]}
    assert ranked.langs == {}
    assert ir.per_query_scores({"q1": {"a": 1}}, ranked.rankings)["q1"]["mrr@10"] == 0.5


def test_retrieval_jsonl_is_ranked_in_list_order_whatever_the_scores(tmp_path):
    run = tmp_path / "run.jsonl"
    run.write_text(
        '{"id": "q1", "question": "?", "lang": "fi", "ctxs": [{"id": "a", "score": 1.0}, {"id": "b", "score": 5.0}]}\n'
        '{"id": 2, "question": "?", "lang": "te", "ctxs": [{"id": 7, "score": 1.0}]}\n'
    )
    ranked = readers.read_run(run)
    assert ranked.rankings == {"q1": ["a", "b"], "2": ["7"]}
    assert ranked.langs == {"q1": "fi", "2": "te"}
    assert ir.per_query_scores({"q1": {"a": 1}}, ranked.rankings)["q1"]["mrr@10"] == 1.0


def test_qrels_trec_and_beir(tmp_path):
    trec = tmp_path / "qrels.txt"
    trec.write_text("q1 0 d1 1\nq1 0 d2 0\n\nq2 Q0 d3 2\n")
    assert readers.read_qrels(trec) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}
    beir = tmp_path / "test.tsv"
    beir.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    assert readers.read_qrels(beir) == {"q1": {"d1": 1}, "q2": {"d3": 1}}
