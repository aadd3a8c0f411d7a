"""Stage-2 distillation end to end on tiny models: batches, resume state, and agreement rising."""

from __future__ import annotations

import dataclasses
import json

import ml_collections
import numpy as np
import pytest

from umr_jax.data import formats
from umr_jax.data.batches import pad_rows
from umr_jax.demo import demo_paths
from umr_jax.models import hf_io
from umr_jax.training import distill
from umr_jax.runtime import runtime_config

Q_TRAIN, CANDIDATES = 24, 6


@pytest.fixture(scope="module")
def pseudo_labels(tmp_path_factory):
    """Pseudo labels in the real format: a synthetic teacher that prefers passages by a fixed order."""
    rng = np.random.default_rng(0)
    passages = list(formats.read_dpr_passages(demo_paths()["passages"]))[:300]
    questions = list(formats.read_questions(demo_paths()["train_questions"]))[: Q_TRAIN + 8]
    results = []
    for q in questions:
        picks = rng.choice(len(passages), CANDIDATES, replace=False)
        scores = -rng.random(CANDIDATES) * 3
        ctxs = tuple(formats.Context(passages[i].id, passages[i].title, passages[i].text, float(s)) for i, s in zip(picks, scores))
        results.append(formats.RetrievalResult(q.id, q.question, q.lang, ctxs, scorer="synthetic"))
    folder = tmp_path_factory.mktemp("labels")
    formats.write_retrieval(folder / "train.jsonl", results[:Q_TRAIN])
    formats.write_retrieval(folder / "dev.jsonl", results[:8])  # dev = some training questions: agreement must rise
    return folder


def _config(retriever, labels, output, steps_epochs=6):
    c = ml_collections.ConfigDict({
        "objective": "distill", "output_dir": str(output),
        "model": dict(init=str(retriever), pooling="mean", separate_towers=True, dtype="float32", query_max_length=32, passage_max_length=96),
        "data": dict(pseudo_labels=str(labels / "train.jsonl"), dev_pseudo_labels=str(labels / "dev.jsonl"), top_k=100, candidates_per_question=4),
        "train": dict(questions_per_batch=8, epochs=steps_epochs, learning_rate=3e-3, adam_eps=1e-8, weight_decay=0.0, warmup_steps=2,
                      grad_clip_norm=2.0, dropout=0.0, seed=1, temperature=10.0, student_scale=1.0, grad_cache=True,
                      query_chunk=4, passage_chunk=8, eval_every=9, checkpoint_every=9, keep_checkpoints=2, log_every=1),
        "runtime": runtime_config(),
    })
    return c


def test_batches_are_deterministic_and_resumable(pseudo_labels):
    tokenizer = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    questions = distill.load_pseudo_labels(pseudo_labels / "train.jsonl")
    make = lambda: distill.DistillBatches(questions, tokenizer, questions_per_batch=8, candidates=4, seed=3, passage_max_length=96)  # noqa: E731
    a = make()
    first = [next(a) for _ in range(5)]  # crosses an epoch boundary (3 batches per epoch)
    b = make()
    next(b), next(b)
    state = b.get_state()
    c = make()
    c.set_state(json.loads(json.dumps(state)))
    for expected in first[2:]:
        got = next(c)
        assert got.keys() == expected.keys()
        for key in got:
            np.testing.assert_array_equal(got[key], expected[key])
    batch = first[0]
    assert batch["query_ids"].shape[0] == 8 and batch["passage_ids"].shape[0] == 32
    assert batch["passage_ids"].shape[1] in (32, 64, 96) and batch["lm_scores"].shape == (8, 4)
    # Candidates are a sample of the question's own scored passages, scores carried along.
    own = {q.id: q for q in questions}
    assert set(np.round(batch["lm_scores"][0], 5)) <= set(np.round(np.concatenate([q.scores for q in own.values()]), 5))
    # Process slicing: two processes' rows concatenate to the global batch.
    halves = [distill.DistillBatches(questions, tokenizer, questions_per_batch=8, candidates=4, seed=3, passage_max_length=96,
                                     process_index=i, process_count=2) for i in range(2)]
    parts = [next(h) for h in halves]
    for key in batch:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), batch[key])
    # fixed_lengths: the same rows, every batch padded to the maximum lengths (one compiled step).
    fixed = distill.DistillBatches(questions, tokenizer, questions_per_batch=8, candidates=4, seed=3, query_max_length=40,
                                   passage_max_length=96, fixed_lengths=True)
    varied = distill.DistillBatches(questions, tokenizer, questions_per_batch=8, candidates=4, seed=3, query_max_length=40,
                                    passage_max_length=96)
    shapes = set()
    for _ in range(3):
        f, v = next(fixed), next(varied)
        assert f["query_ids"].shape == (8, 40) and f["passage_ids"].shape == (32, 96)
        shapes.add((v["query_ids"].shape, v["passage_ids"].shape))
        for key in ("query", "passage"):
            width = v[f"{key}_ids"].shape[1]
            np.testing.assert_array_equal(f[f"{key}_ids"][:, :width], v[f"{key}_ids"])
            assert not f[f"{key}_mask"][:, width:].any()
        np.testing.assert_array_equal(f["lm_scores"], v["lm_scores"])
    assert shapes != {((8, 40), (32, 96))}  # the bucketed batches are narrower somewhere


def test_distillation_raises_teacher_student_agreement(tiny_retriever, pseudo_labels, tmp_path, caplog):
    caplog.set_level("INFO", logger="umr_jax.training.common")
    config = _config(tiny_retriever, pseudo_labels, tmp_path / "run")
    summary = distill.train(config)
    # 8 questions in chunks of 4 over 8 devices: a chunk cannot span every device, and the log says so.
    assert "train.query_chunk=4 is not a multiple of the 8 batch shards" in caplog.text
    assert "train.passage_chunk" not in caplog.text
    assert summary["reason"] == "done" and summary["steps"] == 18
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    dev = [r for r in records if r["split"] == "dev"]
    assert dev[0]["step"] == 0 and dev[-1]["step"] == 18
    assert dev[-1]["teacher_best_mean_rank"] < dev[0]["teacher_best_mean_rank"]
    assert dev[-1]["teacher_student_top1_agreement"] > dev[0]["teacher_student_top1_agreement"]
    train = [r for r in records if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    # Each logged step says how fast the run goes; the first step compiled and has no rate.
    speeds = [r["speed"] for r in train]
    assert "steps_per_s" not in speeds[0] and speeds[0]["compile_s"] > 0
    rated = [s for s in speeds if "steps_per_s" in s]
    assert len(rated) >= 9 and all(s["steps_per_s"] > 0 for s in rated)
    assert all(s["examples_per_s"] == pytest.approx(s["steps_per_s"] * 8) for s in rated)  # 8 questions a step
    assert all(0 < s["tokens_per_s"] <= s["padded_tokens_per_s"] for s in rated)
    assert all("mfu" not in s for s in speeds)  # no published peak for a CPU
    assert speeds[-1]["eta_s"] == 0 and all(s["eta_s"] > 0 for s in speeds[1:-1] if "eta_s" in s)
    assert "steps/s" in caplog.text and "examples/s" in caplog.text and "ETA 0:00:00" in caplog.text
    # config.json: the resolved config (the folder it was given), written before the first step.
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == json.loads(json.dumps(config.to_dict()))
    from umr_jax.training.summaries import read_scalars

    board = read_scalars(tmp_path / "run" / "tensorboard")
    assert [step for step, _ in board["train/loss"]] == list(range(1, 19))
    assert len(board["speed/steps_per_s"]) == len(rated) and board["speed/eta_s"][-1] == (18, 0.0)
    # The best retriever is exported as HF folders that load back.
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["step"] > 0
    for tower in ("query_encoder", "passage_encoder"):
        assert hf_io.load_bert(tmp_path / "run" / "best" / tower).config.hidden_size == 32
    assert (tmp_path / "run" / "tensorboard").is_dir()


def test_teacher_rank_metrics_equal_one_question_at_a_time(tiny_retriever, pseudo_labels):
    """The batched dev metric (tokenized once, one padded length, full batches) against the
    definition computed question by question with each question's own padding."""
    from umr_jax.training import common

    setup = common.build_dual_encoder(tiny_retriever, separate_towers=True, pooling="mean", dtype="float32", dropout=0.0)
    questions = distill.load_pseudo_labels(pseudo_labels / "train.jsonl", top_k=100)
    # Uneven candidate counts, so the flat passage batch crosses question boundaries unevenly.
    questions = [dataclasses.replace(q, **{f: getattr(q, f)[: 2 + i % 5] for f in ("titles", "texts", "scores")})
                 for i, q in enumerate(questions)]
    assert len({len(q.scores) for q in questions}) > 1
    encode_q, encode_p = distill.jitted_encoders(setup.module)
    tok, pad = setup.tokenizer, setup.tokenizer.pad_token_id
    ranks, agree = [], []
    for q in questions:
        q_ids, q_mask = pad_rows(tok([q.question], max_length=32, truncation=True)["input_ids"], 32, pad)
        p_tok = tok(list(q.titles), list(q.texts), max_length=96, truncation="only_second")["input_ids"]
        p_ids, p_mask = pad_rows(p_tok, max(map(len, p_tok)), pad)
        student = np.asarray(encode_p(setup.params, p_ids, p_mask), np.float64) @ np.asarray(encode_q(setup.params, q_ids, q_mask), np.float64)[0]
        best = int(np.argmax(q.scores))
        ranks.append(1 + int(np.sum(student > student[best])))
        agree.append(float(np.argmax(student) == best))
    metrics = distill.TeacherRankMetrics(setup, questions, query_max_length=32, passage_max_length=96, query_batch=5,
                                         passage_batch=7)(setup.params)
    assert metrics["teacher_best_mean_rank"] == pytest.approx(np.mean(ranks), abs=1e-9)
    assert metrics["teacher_student_top1_agreement"] == pytest.approx(np.mean(agree), abs=1e-9)
    assert np.mean(ranks) > 1.0  # the random tower does not already agree with the teacher everywhere
