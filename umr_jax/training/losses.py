"""Retrieval losses as pure functions of global arrays (the compiler inserts the collectives).

`umr_distillation_loss` is UMR's stage-2 objective exactly; `info_nce_loss` is the contrastive
objective for (query, positive[, hard negatives]) pairs such as WebFAQ and translated data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MASKED_TEACHER_LOGPROB = -1000.0  # UMR's teacher log-probability for other questions' passages


def teacher_log_probs(lm_scores: jax.Array, temperature: float = 10.0) -> jax.Array:
    """log_softmax(temperature * score) over each question's own candidates: [Q, C] -> [Q, C].

    UMR's "temperature 10" multiplies the LM scores (mean token log-likelihoods)."""
    return jax.nn.log_softmax(temperature * lm_scores.astype(jnp.float32), axis=-1)


def umr_distillation_loss(
    query_embeddings: jax.Array,
    passage_embeddings: jax.Array,
    lm_scores: jax.Array,
    *,
    temperature: float = 10.0,
    student_scale: float = 1.0,
    candidate_mask: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """KL(teacher || student) with in-batch negatives, averaged over questions.

    query_embeddings [Q, D]; passage_embeddings [Q * C, D], question i's candidates at rows
    i*C .. i*C+C-1; lm_scores [Q, C] (the LM's scores of those candidates).
    Student: log_softmax over the dot products of each query with all Q*C passages (times
    `student_scale`; ART uses 1/sqrt(768)). Teacher: `teacher_log_probs` on the question's own
    C columns and -1000 elsewhere. `candidate_mask` [Q, C] (1 = real) drops padded candidates
    from both distributions; questions with no real candidate are excluded from the mean.
    Returns (loss, metrics) with the teacher-student top-1 agreement.
    """
    q, c = lm_scores.shape
    scores = jnp.einsum("qd,pd->qp", query_embeddings.astype(jnp.float32), passage_embeddings.astype(jnp.float32))
    scores = scores * student_scale
    own = jnp.arange(q * c)[None, :] // c == jnp.arange(q)[:, None]  # [Q, Q*C]
    if candidate_mask is None:
        candidate_mask = jnp.ones((q, c), bool)
    candidate_mask = candidate_mask.astype(bool)
    teacher_own = teacher_log_probs(jnp.where(candidate_mask, lm_scores.astype(jnp.float32), -jnp.inf), temperature)  # [Q, C]
    # Place each question's teacher row on its own columns of the [Q, Q*C] in-batch matrix.
    teacher = jnp.where(own, jnp.tile(teacher_own, (1, q)), MASKED_TEACHER_LOGPROB)
    passage_valid = candidate_mask.reshape(-1)[None, :]
    student = jax.nn.log_softmax(jnp.where(passage_valid, scores, -jnp.inf), axis=-1)
    p_teacher = jnp.where(passage_valid, jnp.exp(teacher), 0.0)
    per_question = jnp.sum(jnp.where(p_teacher > 0, p_teacher * (teacher - student), 0.0), axis=-1)
    has_any = jnp.any(candidate_mask, axis=-1)
    loss = jnp.sum(jnp.where(has_any, per_question, 0.0)) / jnp.maximum(jnp.sum(has_any), 1)
    own_scores = jnp.where(candidate_mask, jnp.take_along_axis(scores, (jnp.arange(q)[:, None] * c + jnp.arange(c)[None, :]), axis=1), -jnp.inf)
    agreement = jnp.mean(jnp.argmax(own_scores, -1) == jnp.argmax(teacher_own, -1))
    return loss, {"teacher_student_top1_agreement": agreement}


def info_nce_loss(
    query_embeddings: jax.Array,
    passage_embeddings: jax.Array,
    *,
    scale: float = 1.0,
    num_hard_negatives: int = 0,
) -> tuple[jax.Array, dict]:
    """In-batch InfoNCE: query i's positive is passage row i * (1 + H); the other rows of the
    global batch (other positives and every hard negative) are negatives.

    query_embeddings [Q, D]; passage_embeddings [Q * (1 + H), D] with each query's positive
    followed by its H hard negatives. Returns (mean cross-entropy, metrics with accuracy).
    """
    q = query_embeddings.shape[0]
    group = 1 + num_hard_negatives
    scores = jnp.einsum("qd,pd->qp", query_embeddings.astype(jnp.float32), passage_embeddings.astype(jnp.float32)) * scale
    targets = jnp.arange(q) * group
    log_probs = jax.nn.log_softmax(scores, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_probs, targets[:, None], axis=1))
    accuracy = jnp.mean(jnp.argmax(scores, axis=-1) == targets)
    return loss, {"in_batch_accuracy": accuracy}
