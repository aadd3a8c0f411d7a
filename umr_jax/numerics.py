"""Array functions shared by the models, the encoders and the trainers (below all of them, so
each can import it; tests/test_layers.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

L2_EPSILON = 1e-12


def l2_normalize(x: jax.Array) -> jax.Array:
    """`x` scaled to unit L2 norm along the last axis (rows of norm below 1e-12 divided by
    1e-12, so a zero row stays zero): what cosine similarity applies to both sides before a dot
    product, in the trainers' losses, `models.dual_encoder.similarity_matrix` and the encoders of
    cosine-trained towers."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), L2_EPSILON)
