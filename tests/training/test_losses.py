"""The distillation and InfoNCE losses against hand-written numpy references."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from umr_jax.training.losses import info_nce_loss, teacher_log_probs, umr_distillation_loss


def _log_softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def umr_reference(q, p, lm, temperature=10.0, scale=1.0):
    """UMR stage 2 written out loop by loop, as the released code computes it."""
    n_q, n_c = lm.shape
    scores = (q.astype(np.float64) @ p.astype(np.float64).T) * scale  # [Q, Q*C]
    student = _log_softmax(scores)
    total = 0.0
    for i in range(n_q):
        teacher = np.full(n_q * n_c, -1000.0)
        teacher[i * n_c : (i + 1) * n_c] = _log_softmax(temperature * lm[i].astype(np.float64))
        # torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="sum") for row i
        total += np.sum(np.exp(teacher) * (teacher - student[i]))
    return total / n_q


@pytest.mark.parametrize("scale", [1.0, 768**-0.5])
def test_umr_distillation_equals_reference(scale):
    rng = np.random.RandomState(0)
    q, c, d = 16, 16, 12  # UMR's 16 questions x 16 candidates = 256 in-batch columns
    qe, pe = rng.randn(q, d).astype(np.float32), rng.randn(q * c, d).astype(np.float32)
    lm = -rng.rand(q, c).astype(np.float32) * 3  # mean log-likelihoods are negative
    loss, metrics = umr_distillation_loss(qe, pe, lm, student_scale=scale)
    assert abs(float(loss) - umr_reference(qe, pe, lm, scale=scale)) <= 1e-4 * max(1.0, abs(float(loss)))
    own = np.stack([(qe[i] @ pe[i * c : (i + 1) * c].T) for i in range(q)])
    expected_agreement = np.mean(own.argmax(1) == lm.argmax(1))
    assert float(metrics["teacher_student_top1_agreement"]) == pytest.approx(expected_agreement)


def test_teacher_temperature_multiplies():
    lm = np.array([[-1.0, -2.0, -3.0]], np.float32)
    np.testing.assert_allclose(np.asarray(teacher_log_probs(lm)), _log_softmax(10 * lm.astype(np.float64)), rtol=1e-6, atol=1e-6)


def test_loss_is_zero_when_student_matches_teacher_and_blocks_other_questions():
    # Two questions whose passages are orthogonal to the other query: in-batch columns get ~0 mass.
    lm = np.log(np.array([[0.7, 0.3], [0.2, 0.8]], np.float32)) / 10.0
    qe = np.array([[100.0, 0.0], [0.0, 100.0]], np.float32)
    pe = np.array([[np.log(0.7) / 100, -1.0], [np.log(0.3) / 100, -1.0], [-1.0, np.log(0.2) / 100], [-1.0, np.log(0.8) / 100]], np.float32)
    loss, _ = umr_distillation_loss(qe, pe, lm)
    assert abs(float(loss)) < 1e-4


def test_candidate_mask_drops_padding():
    rng = np.random.RandomState(1)
    qe, pe = rng.randn(3, 4).astype(np.float32), rng.randn(3 * 5, 4).astype(np.float32)
    lm = -rng.rand(3, 5).astype(np.float32)
    mask = np.ones((3, 5), bool)
    mask[1, 3:] = False
    loss, _ = umr_distillation_loss(qe, pe, lm, candidate_mask=mask)
    # Reference: drop the padded passages entirely, then compute with uneven candidate lists.
    keep = mask.reshape(-1)
    scores = _log_softmax(qe.astype(np.float64) @ pe[keep].astype(np.float64).T)
    owners = np.repeat(np.arange(3), 5)[keep]
    total = 0.0
    for i in range(3):
        t = np.full(keep.sum(), -1000.0)
        t[owners == i] = _log_softmax(10 * lm[i][mask[i]].astype(np.float64))
        total += np.sum(np.exp(t) * (t - scores[i]))
    assert abs(float(loss) - total / 3) <= 1e-4
    grads = jax.grad(lambda a, b: umr_distillation_loss(a, b, lm, candidate_mask=mask)[0], argnums=(0, 1))(qe, pe)
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)
    assert np.all(np.asarray(grads[1])[~keep] == 0.0)


@pytest.mark.parametrize("hard", [0, 2])
def test_info_nce_equals_reference(hard):
    rng = np.random.RandomState(2)
    q, d = 6, 8
    qe, pe = rng.randn(q, d).astype(np.float32), rng.randn(q * (1 + hard), d).astype(np.float32)
    loss, metrics = info_nce_loss(qe, pe, scale=20.0, num_hard_negatives=hard)
    scores = 20.0 * qe.astype(np.float64) @ pe.astype(np.float64).T
    targets = np.arange(q) * (1 + hard)
    ref = -np.mean(_log_softmax(scores)[np.arange(q), targets])
    assert abs(float(loss) - ref) <= 1e-4
    assert float(metrics["in_batch_accuracy"]) == pytest.approx(np.mean(scores.argmax(1) == targets))
