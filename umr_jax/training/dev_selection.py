"""Choosing the best retriever of a distillation run on held-out pseudo labels: the criterion
(what is measured) and the schedule (when it is measured, and which measurements may win).

Two criteria, `train.dev_selection`:

  "average_rank"       the released UMR run's (DPR's `validate_average_rank`): every dev question
                       brings a pool of passages, its positive plus `val_av_rank_hard_neg` hard and
                       `val_av_rank_other_neg` other negatives; all pools are joined into one set,
                       each question's positive is ranked among all of them by the student, and the
                       0-based ranks are averaged (lower is better). `AverageRankMetrics`.
  "teacher_best_rank"  ours: the rank (1-based) of the teacher's best candidate among the
                       question's own candidates, averaged, with the top-1 agreement
                       (`distill.TeacherRankMetrics`).

What the "positive" is. DPR's criterion reads a dev file in DPR's training format
(`positive_ctxs`, `hard_negative_ctxs`, `negative_ctxs`); the released UMR repository tells the
user to split the reranked file into train and dev but ships no conversion, and the reranked
file has only `ctxs`, sorted by LM score. We read the dev pseudo labels as that conversion
would most plainly give them: the positive is the LM's top-scored candidate, the hard
negatives the next `val_av_rank_hard_neg` candidates in LM order, the other negatives the
`val_av_rank_other_neg` after those (LM ranks 2-31 and 32-61 with the released 30 and 30).

Two schedules, `dev_schedule`:

  `EveryNSteps`     ours: measured at step 0, every `eval_every` steps and at the end; every
                    measurement may become the best (the untrained retriever included).
  `EpochEnds`       the released one: measured `eval_per_epoch` times per epoch (every
                    ceil(steps_per_epoch / eval_per_epoch) steps) and at step 0, but only the
                    end-of-epoch measurements of epochs >= `val_av_rank_start_epoch` may become
                    the best (the released run saves a checkpoint only there).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax.data.batches import batch_buckets, pad_rows

DEV_SELECTIONS = ("average_rank", "teacher_best_rank")


class EveryNSteps:
    """Measure at step 0, every `every` steps and at `total_steps`; every measurement is eligible."""

    def __init__(self, every: int, total_steps: int):
        self.every, self.total_steps = max(1, int(every)), total_steps

    def measures(self, step: int) -> bool:
        return step == 0 or step % self.every == 0 or step == self.total_steps

    def eligible(self, step: int) -> bool:
        return self.measures(step)


class EpochEnds:
    """The released schedule: measure at step 0 and `eval_per_epoch` times per epoch; only epoch
    ends (and the last step) of epochs >= `start_epoch` are eligible.

    Epoch e ends at step (e + 1) * steps_per_epoch; within it, measurements fall every
    ceil(steps_per_epoch / eval_per_epoch) steps, counted from the epoch's start."""

    def __init__(self, steps_per_epoch: int, eval_per_epoch: int, start_epoch: int, total_steps: int):
        self.steps_per_epoch, self.start_epoch, self.total_steps = max(1, steps_per_epoch), start_epoch, total_steps
        self.eval_step = math.ceil(self.steps_per_epoch / max(1, eval_per_epoch))

    def _epoch_end(self, step: int) -> bool:
        return step > 0 and (step % self.steps_per_epoch == 0 or step == self.total_steps)

    def measures(self, step: int) -> bool:
        return step == 0 or self._epoch_end(step) or (step % self.steps_per_epoch) % self.eval_step == 0

    def eligible(self, step: int) -> bool:
        return self._epoch_end(step) and (step - 1) // self.steps_per_epoch >= self.start_epoch


def released_dev_rows(num_questions: int, batch_size: int, max_questions: int) -> list[int]:
    """The dev questions DPR's `validate_average_rank` encodes, in order (indices, repeats kept).

    Its iterator yields batches of `batch_size` and completes a short last batch with the first
    questions again; it stops before a batch once more than `max_questions` are encoded."""
    rows: list[int] = []
    for start in range(0, num_questions, batch_size):
        if len(rows) > max_questions:
            break
        batch = list(range(start, min(start + batch_size, num_questions)))
        if len(batch) < batch_size:
            batch += list(range(min(batch_size - len(batch), num_questions)))
        rows += batch
    return rows


def dev_pool(scores: Sequence[np.ndarray], rows: Sequence[int], hard_negatives: int,
             other_negatives: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The pooled passages of `rows` (question indices) as (question, candidate) pairs, and the
    pool row of each row's positive. A question's pool: its LM-best candidate, then the
    `other_negatives` candidates after the next `hard_negatives` in LM order, then those
    `hard_negatives` (DPR's order: positive, other, hard)."""
    pool: list[tuple[int, int]] = []
    positives = np.zeros(len(rows), np.int64)
    for r, qi in enumerate(rows):
        order = np.argsort(-np.asarray(scores[qi], np.float64), kind="stable")
        hard = order[1 : 1 + hard_negatives]
        other = order[1 + hard_negatives : 1 + hard_negatives + other_negatives]
        positives[r] = len(pool)
        pool += [(qi, int(c)) for c in (order[0], *other, *hard)]
    return pool, positives


@jax.jit
def _passages_above_positive(q: jax.Array, p: jax.Array, positive: jax.Array) -> jax.Array:
    """For each query row, how many pooled passages score strictly above its positive."""
    scores = q @ p.T  # [rows, pool]
    own = jnp.take_along_axis(scores, positive[:, None], axis=1)
    return jnp.sum(scores > own, axis=1)


class AverageRankMetrics:
    """DPR's average rank on dev pseudo labels (module docstring): `__call__(params)` returns
    {"average_rank": mean 0-based rank of each question's positive in the joined pool,
    "average_rank_questions": questions counted}.

    Questions and pooled passages are tokenized once and padded to one length per side, so
    every measurement reuses the same compiled encoders. Ties count in the question's favour
    (only passages scoring strictly higher push it down; DPR's sort leaves tie order undefined).
    """

    def __init__(self, setup, questions: Sequence[Any], *, query_max_length: int, passage_max_length: int,
                 hard_negatives: int = 30, other_negatives: int = 30, dev_batch_size: int = 12,
                 max_questions: int = 10000, encode_fn=None, query_batch: int = 64, passage_batch: int = 256,
                 rank_chunk: int = 64):
        if not questions:
            raise ValueError("average rank metrics need at least one question")
        from umr_jax.training.distill import TeacherRankMetrics, jitted_encoders

        self._encode = TeacherRankMetrics._encode
        self.encode_q, self.encode_p = encode_fn or jitted_encoders(setup.module)
        rows = released_dev_rows(len(questions), dev_batch_size, max_questions)
        pool, self.positives = dev_pool([q.scores for q in questions], rows, hard_negatives, other_negatives)
        tok, pad = setup.tokenizer, setup.tokenizer.pad_token_id
        q_tok = tok([questions[i].question for i in rows], max_length=query_max_length, truncation=True)["input_ids"]
        p_tok = tok([questions[qi].titles[c] for qi, c in pool], [questions[qi].texts[c] for qi, c in pool],
                    max_length=passage_max_length, truncation="only_second")["input_ids"]
        q_buckets, p_buckets = batch_buckets(query_max_length, passage_max_length)
        self.q_ids, self.q_mask = pad_rows(q_tok, q_buckets.padded(max(map(len, q_tok))), pad)
        self.p_ids, self.p_mask = pad_rows(p_tok, p_buckets.padded(max(map(len, p_tok))), pad)
        self.query_batch, self.passage_batch, self.rank_chunk = query_batch, passage_batch, rank_chunk

    def __call__(self, params: Any) -> dict[str, float]:
        q = self._encode(self.encode_q, params, self.q_ids, self.q_mask, min(self.query_batch, len(self.q_ids)))
        p = self._encode(self.encode_p, params, self.p_ids, self.p_mask, min(self.passage_batch, len(self.p_ids)))
        q, p = q.astype(np.float32), jnp.asarray(p, jnp.float32)
        n, chunk = len(q), min(self.rank_chunk, len(q))
        ranks = []
        for start in range(0, n, chunk):  # the last chunk padded to full size: one compiled program
            rows = np.arange(start, start + chunk) % n
            ranks.append(np.asarray(_passages_above_positive(q[rows], p, self.positives[rows]))[: n - start])
        ranks = np.concatenate(ranks)
        return {"average_rank": float(np.mean(ranks)), "average_rank_questions": float(n)}
