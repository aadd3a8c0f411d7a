"""Checkpoint selection: DPR's average rank (the released UMR criterion) against DPR's own
computation in PyTorch, the released schedule, and the released reranker's file as pseudo labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from umr_jax.errors import InputError
from umr_jax.training import common, dev_selection, distill
from umr_jax.training.distill import ScoredQuestion


def test_dev_rows_repeat_the_first_questions_and_stop_after_max_questions():
    # 26 questions in batches of 12: the third batch (24, 25) is completed with questions 0-9.
    assert dev_selection.released_dev_rows(26, 12, 10000) == list(range(26)) + list(range(10))
    # 4 questions: the one batch is completed with as many first questions as there are.
    assert dev_selection.released_dev_rows(4, 12, 10000) == [0, 1, 2, 3, 0, 1, 2, 3]
    # The check runs before each batch: a batch starts while at most max_questions are encoded.
    assert dev_selection.released_dev_rows(40, 12, 12) == list(range(24))
    assert dev_selection.released_dev_rows(40, 12, 11) == list(range(12))


def test_the_released_schedule_measures_four_times_an_epoch_and_selects_at_epoch_ends():
    s = dev_selection.EpochEnds(steps_per_epoch=10, eval_per_epoch=4, start_epoch=1, total_steps=25)
    assert [k for k in range(26) if s.measures(k)] == [0, 3, 6, 9, 10, 13, 16, 19, 20, 23, 25]
    assert [k for k in range(26) if s.eligible(k)] == [20, 25]  # epoch 0 ends at 10, before start_epoch 1
    ours = dev_selection.EveryNSteps(every=7, total_steps=20)
    assert [k for k in range(21) if ours.eligible(k)] == [0, 7, 14, 20]


def test_pool_holds_the_lm_best_then_other_then_hard_negatives():
    scores = [np.array([-3.0, -1.0, -2.0, -5.0, -4.0, -0.5])]
    pool, positives = dev_selection.dev_pool(scores, [0, 0], hard_negatives=2, other_negatives=1)
    # LM order: 5, 1, 2, 0, 4, 3 -> positive 5, hard 1 and 2, other 0.
    assert pool == [(0, 5), (0, 0), (0, 1), (0, 2)] * 2 and positives.tolist() == [0, 4]


def _dpr_ranks(setup, metrics):
    """DPR's validate_average_rank on our vectors: sort each question's row of scores against
    the pool, highest first, and take the positive's 0-based position; with the count of
    passages tied with the positive (repeated passages: DPR's sort leaves their order open)."""
    encode_q, encode_p = distill.jitted_encoders(setup.module)
    q = torch.from_numpy(np.asarray(encode_q(setup.params, metrics.q_ids, metrics.q_mask)))
    p = torch.from_numpy(np.asarray(encode_p(setup.params, metrics.p_ids, metrics.p_mask)))
    scores = q @ p.T
    _, indices = torch.sort(scores, dim=1, descending=True)
    ranks = [int((indices[i] == idx).nonzero()) for i, idx in enumerate(metrics.positives)]
    ties = [int((scores[i] == scores[i, idx]).sum()) - 1 for i, idx in enumerate(metrics.positives)]
    return np.array(ranks), np.array(ties), len(p)


def test_average_rank_equals_dprs_sorted_rank(tiny_retriever):
    setup = common.build_dual_encoder(tiny_retriever, separate_towers=True, pooling="mean", dtype="float32", dropout=0.0)
    rng = np.random.default_rng(3)
    words = ["river", "castle", "engine", "poem", "harbour", "violin", "glacier", "market"]
    questions = [ScoredQuestion(f"q{i}", " ".join(rng.choice(words, 3)), "en",
                                tuple(f"title {j}" for j in range(7)),
                                tuple(" ".join(rng.choice(words, 6)) + f" {i} {j}" for j in range(7)),
                                rng.normal(size=7).astype(np.float32)) for i in range(5)]
    options = dict(query_max_length=16, passage_max_length=32, hard_negatives=3, other_negatives=2, rank_chunk=3)
    # One dev batch of 5: every pooled passage distinct, so DPR's sort gives the rank outright.
    metrics = dev_selection.AverageRankMetrics(setup, questions, dev_batch_size=5, **options)
    ranks, ties, pool = _dpr_ranks(setup, metrics)
    assert pool == 5 * 6 and ties.sum() == 0 and 0 < ranks.mean() < 29
    assert metrics(setup.params) == {"average_rank": pytest.approx(ranks.mean(), abs=1e-12), "average_rank_questions": 5.0}
    # Batches of 4: the second is completed with questions 0-2 again, whose passages are then
    # pooled twice; a tie counts in the question's favour, DPR's sort puts it either way.
    metrics = dev_selection.AverageRankMetrics(setup, questions, dev_batch_size=4, **options)
    ranks, ties, pool = _dpr_ranks(setup, metrics)
    got = metrics(setup.params)
    assert pool == 8 * 6 and got["average_rank_questions"] == 8.0 and ties.sum() >= 6
    assert (ranks - ties).mean() <= got["average_rank"] + 1e-12 and got["average_rank"] <= ranks.mean() + 1e-12


def _reranked_file(path, records):
    path.write_text(json.dumps(records, indent=4) + "\n", encoding="utf-8")
    return path


def _record(qid, question, scores):
    return {"id": qid, "question": question, "answers": ["x"], "lang": "ja",
            "ctxs": [{"id": f"{qid}-{i}", "title": "t", "text": f"passage {i}", "score": s, "has_answer": False}
                     for i, s in enumerate(scores)]}


def test_the_released_rerankers_file_reads_as_pseudo_labels(tmp_path):
    path = _reranked_file(tmp_path / "rank0.json", [_record("1", "How tall is it?", [-0.5, -0.9, -2.0]),
                                                    _record("2", "東京はどこ？", [-1.0, -1.0])])
    with pytest.raises(InputError, match="rank0.json: record 1 .* has no 'scorer'.*data.pseudo_labels_format=released"):
        distill.load_pseudo_labels(path)
    questions = distill.load_pseudo_labels(path, file_format="released", strip_question=True)
    assert [q.question for q in questions] == ["How tall is it", "東京はどこ？"]  # only an ASCII "?" goes
    np.testing.assert_array_equal(questions[0].scores, np.float32([-0.5, -0.9, -2.0]))
    assert distill.load_pseudo_labels(path, file_format="released")[0].question == "How tall is it?"
    unsorted = _reranked_file(tmp_path / "unsorted.json", [_record("1", "q", [-0.9, -0.5])])
    with pytest.raises(InputError, match="unsorted.json: record 1 .*not sorted by score"):
        distill.load_pseudo_labels(unsorted, file_format="released")
    retrieved = _reranked_file(tmp_path / "retrieved.json", [_record("1", "q", [71.5, 70.0])])
    with pytest.raises(InputError, match="score above 0, which no LM log-likelihood is"):
        distill.load_pseudo_labels(retrieved, file_format="released")
    with pytest.raises(InputError, match="unknown pseudo-label format 'upr'"):
        distill.load_pseudo_labels(path, file_format="upr")


def test_strip_question_mark_is_the_released_normalize_question():
    assert [distill.strip_question_mark(q) for q in ("Who?", "Who??", "Who? ", "من؟", "Who")] == ["Who", "Who?", "Who? ", "من؟", "Who"]
