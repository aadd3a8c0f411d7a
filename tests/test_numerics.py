"""`numerics.l2_normalize`: the cosine normalisation, the same bits as the copies it replaces."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax.models import similarity_matrix
from umr_jax.numerics import l2_normalize


def test_l2_normalize_is_what_cosine_similarity_applies():
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(7, 8)).astype(np.float32)
    p[3] = 0.0  # a zero row stays zero (divided by the epsilon, not by 0)
    normalized = np.asarray(l2_normalize(jnp.asarray(p)))
    assert not normalized[3].any() and np.allclose(np.linalg.norm(normalized[[0, 1, 2, 4, 5, 6]], axis=-1), 1, atol=1e-6)
    inline = lambda x: x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731  (the replaced copy)
    for fn in (lambda x: x, jax.jit):
        np.testing.assert_array_equal(np.asarray(fn(l2_normalize)(jnp.asarray(q))), np.asarray(fn(inline)(jnp.asarray(q))))
    np.testing.assert_array_equal(np.asarray(similarity_matrix(q, p, "cosine")),
                                  np.asarray(l2_normalize(jnp.asarray(q)) @ l2_normalize(jnp.asarray(p)).T))
