"""Tiny models, losses and batches shared by the sharded-runtime tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from umr_jax.models import BertConfig, BertEncoderTower, DualEncoder, T5Config, T5EncoderDecoder

# Dims divide every mesh axis used in the tests (fsdp 4, model 2).
BERT = BertConfig(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, max_position_embeddings=32)
MT5 = T5Config(
    vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
    is_gated_act=True, dense_act_fn="gelu_new", tie_word_embeddings=False, scale_decoder_outputs=False,
    model_type="mt5", vocab_chunk_size=32,
)
BATCH = 16


def dual_encoder():
    return DualEncoder(BertEncoderTower(BERT), BertEncoderTower(BERT))


def de_batch(seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    q = rng.randint(1, 96, (BATCH, 8)).astype(np.int32)
    p = rng.randint(1, 96, (BATCH, 16)).astype(np.int32)
    qm, pm = np.ones_like(q), np.ones_like(p)
    qm[::3, 5:] = 0
    pm[::2, 11:] = 0
    return {"query_ids": q, "query_mask": qm, "passage_ids": p, "passage_mask": pm}


def de_init(rng=jax.random.PRNGKey(0)):
    b = de_batch()
    return dual_encoder().init(rng, b["query_ids"][:1], b["query_mask"][:1], b["passage_ids"][:1], b["passage_mask"][:1])["params"]


def de_loss(params, batch, rng):
    """Symmetric in-batch softmax (query->passage and passage->query): pair i is the positive.

    Symmetric so that no parameter has a mathematically-zero gradient: a one-sided softmax is
    invariant to shifting every passage embedding by one vector, so the passage tower's last
    bias would get pure round-off gradients, which Adam then amplifies to full-size steps.
    """
    scores = dual_encoder().apply(
        {"params": params}, batch["query_ids"], batch["query_mask"], batch["passage_ids"], batch["passage_mask"],
        deterministic=False, rngs={"dropout": rng},
    )
    loss = -0.5 * jnp.mean(jnp.diagonal(jax.nn.log_softmax(scores, axis=-1)) + jnp.diagonal(jax.nn.log_softmax(scores, axis=0)))
    return loss, {"mean_score": jnp.mean(scores)}


def t5_batch(seed: int = 0) -> dict:
    rng = np.random.RandomState(seed)
    src = rng.randint(2, 128, (BATCH, 24)).astype(np.int32)
    tgt = rng.randint(2, 128, (BATCH, 8)).astype(np.int32)
    sm, tm = np.ones_like(src), np.ones_like(tgt)
    sm[::4, 17:] = 0
    tm[1::4, 6:] = 0
    return {"source_ids": src, "source_mask": sm, "target_ids": tgt, "target_mask": tm}


def t5_init(rng=jax.random.PRNGKey(1)):
    b = t5_batch()
    return T5EncoderDecoder(MT5).init(rng, b["source_ids"][:1], b["source_mask"][:1], b["target_ids"][:1])["params"]


def t5_loss(params, batch, rng):
    log_probs = T5EncoderDecoder(MT5).apply(
        {"params": params}, batch["source_ids"], batch["source_mask"], batch["target_ids"], batch["target_mask"],
        deterministic=False, rngs={"dropout": rng}, method="token_log_probs",
    )
    return -jnp.sum(log_probs) / jnp.sum(batch["target_mask"]), {}


# eps well above round-off: Adam divides by sqrt(v), so for gradient entries near 0 its step
# is lr * sign(g), and a 1e-9 difference in summation order (one device vs a mesh) flips it.
OPTIMIZER = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, eps=1e-4, weight_decay=0.01))
