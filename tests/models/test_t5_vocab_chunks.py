"""The chunked vocabulary log-sum-exp of the scorer: exact against the full log-softmax on
both of its paths, and sharding-friendly on a vocabulary-sharded (`fsdp_tp`) mesh."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from umr_jax.models.t5 import chunked_token_log_probs, vocab_chunk_count
from umr_jax.parallel.mesh import make_mesh


def test_vocab_chunk_count():
    assert vocab_chunk_count(250112, 16384) == 16  # mT5: 16 chunks of 15632 rows
    assert vocab_chunk_count(32128, 16384) == 2  # T5: 2 of 16064
    assert vocab_chunk_count(4000, 1024) == 4
    assert vocab_chunk_count(1000, 1000) == 1
    assert vocab_chunk_count(997, 100) is None  # a prime: equal chunks would be single rows


def _inputs(vocab, seed=0, batch=3, length=7, dim=16):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    hidden = jax.random.normal(k[0], (batch, length, dim))
    table = 2.0 * jax.random.normal(k[1], (vocab, dim))
    targets = jax.random.randint(k[2], (batch, length), 0, vocab)
    return hidden, table, targets


@pytest.mark.parametrize("vocab, chunk", [(150, 32), (4000, 1024), (997, 100), (997, 400), (151, 32)])
def test_chunked_log_probs_equal_the_full_log_softmax(vocab, chunk):
    hidden, table, targets = _inputs(vocab)
    full = jax.nn.log_softmax(jnp.einsum("btd,vd->btv", hidden, table), axis=-1)
    expected = np.take_along_axis(np.asarray(full), np.asarray(targets)[..., None], -1)[..., 0]
    got = np.asarray(jax.jit(chunked_token_log_probs, static_argnums=3)(hidden, table, targets, chunk))
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


def test_vocabulary_sharded_table_is_never_gathered():
    """On a mesh with model=8 and the table split along its vocabulary, each device computes its
    own 1/8 of every chunk's logits: no all-gather of the table, per-device products of
    chunk/8 rows."""
    mesh = make_mesh({"data": 1, "fsdp": 1, "model": 8})
    hidden, table, targets = _inputs(4096, dim=64)
    table = jax.device_put(table, NamedSharding(mesh, P("model", None)))
    hidden, targets = (jax.device_put(x, NamedSharding(mesh, P())) for x in (hidden, targets))
    f = jax.jit(chunked_token_log_probs, static_argnums=3)
    hlo = f.lower(hidden, table, targets, 1024).compile().as_text()
    assert "all-gather(" not in hlo and "collective-permute(" not in hlo
    assert "f32[21,128]{1,0} dot(" in hlo  # 3 x 7 positions against 1024 / 8 rows of a chunk
    full = jax.nn.log_softmax(jnp.einsum("btd,vd->btv", hidden, table), axis=-1)
    expected = np.take_along_axis(np.asarray(full), np.asarray(targets)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(f(hidden, table, targets, 1024)), expected, rtol=0, atol=2e-5)
