"""Dual encoder: a query tower and a passage tower (shared or separate) and a similarity.

The towers are any module mapping `(input_ids, attention_mask) -> fp32 [batch, embed]`
(`BertEncoderTower`, `T5EncoderTower`). Separate towers start from the same weights in UMR
(both from mContriever); that is a matter of initialisation, handled by the caller.

Parameter tree: `{"query_tower": ..., "passage_tower": ...}`, or `{"query_tower": ...}` alone
when the towers are shared (passages then go through the query tower).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import flax.linen as nn

from umr_jax.numerics import l2_normalize


def similarity_matrix(queries: jax.Array, passages: jax.Array, similarity: str = "dot", scale: float = 1.0) -> jax.Array:
    """Scores of every query against every passage: [n_q, embed] x [n_p, embed] -> fp32 [n_q, n_p].

    `dot` is the raw inner product (UMR, Contriever); `cosine` L2-normalises both sides first.
    `scale` multiplies the scores (ART uses 1/sqrt(768) on dot products; cosine often uses 1/0.05).
    """
    q = queries.astype(jnp.float32)
    p = passages.astype(jnp.float32)
    if similarity == "cosine":
        q, p = l2_normalize(q), l2_normalize(p)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    scores = q @ p.T
    return scores * scale if scale != 1.0 else scores


class DualEncoder(nn.Module):
    """Query and passage towers plus a similarity.

    `query_tower` is always used for queries; `passage_tower=None` shares it for passages.
    """

    query_tower: nn.Module
    passage_tower: nn.Module | None = None
    similarity: str = "dot"
    scale: float = 1.0

    @property
    def shared(self) -> bool:
        return self.passage_tower is None

    def encode_queries(self, input_ids, attention_mask, deterministic: bool = True) -> jax.Array:
        """[batch, q_len] -> fp32 [batch, embed]."""
        return self.query_tower(input_ids, attention_mask, deterministic=deterministic)

    def encode_passages(self, input_ids, attention_mask, deterministic: bool = True) -> jax.Array:
        """[batch, p_len] -> fp32 [batch, embed]."""
        tower = self.query_tower if self.passage_tower is None else self.passage_tower
        return tower(input_ids, attention_mask, deterministic=deterministic)

    def score(self, query_embeddings: jax.Array, passage_embeddings: jax.Array) -> jax.Array:
        return similarity_matrix(query_embeddings, passage_embeddings, self.similarity, self.scale)

    def __call__(self, query_ids, query_mask, passage_ids, passage_mask, deterministic: bool = True) -> jax.Array:
        """Scores of every query against every passage in the batch: fp32 [n_q, n_p]."""
        return self.score(
            self.encode_queries(query_ids, query_mask, deterministic),
            self.encode_passages(passage_ids, passage_mask, deterministic),
        )
