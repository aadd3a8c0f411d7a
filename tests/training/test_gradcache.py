"""A gradient-cached step equals the plain step (same loss, same gradients, same update)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from umr_jax.models import BertConfig, BertEncoderTower, DualEncoder
from umr_jax.parallel import mesh as mesh_lib
from umr_jax.parallel import sharding as shd
from umr_jax.training.gradcache import _chunks, _unchunk, grad_cached_value_and_grad, plain_value_and_grad
from umr_jax.training.losses import umr_distillation_loss
from umr_jax.training.state import create_train_state, make_optimizer, make_train_step

CFG = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=32)
Q, C = 8, 4  # 8 questions x 4 candidates = 32 passages


def _model():
    return DualEncoder(BertEncoderTower(CFG), BertEncoderTower(CFG))


def _encoders():
    model = _model()

    def enc_q(params, ids, mask, rng):
        return model.apply({"params": params}, ids, mask, False, method="encode_queries", rngs={"dropout": rng})

    def enc_p(params, ids, mask, rng):
        return model.apply({"params": params}, ids, mask, False, method="encode_passages", rngs={"dropout": rng})

    def loss(q, p, batch):
        return umr_distillation_loss(q, p, batch["lm_scores"])

    return enc_q, enc_p, loss


def _batch(seed=0, questions=Q):
    rng = np.random.RandomState(seed)
    qi, pi = rng.randint(1, 64, (questions, 6)).astype(np.int32), rng.randint(1, 64, (questions * C, 10)).astype(np.int32)
    qm, pm = np.ones_like(qi), np.ones_like(pi)
    pm[::3, 7:] = 0
    return {"query_ids": qi, "query_mask": qm, "passage_ids": pi, "passage_mask": pm,
            "lm_scores": -rng.rand(questions, C).astype(np.float32)}


def _init():
    b = _batch()
    return _model().init(jax.random.PRNGKey(0), b["query_ids"][:1], b["query_mask"][:1], b["passage_ids"][:1], b["passage_mask"][:1])["params"]


@pytest.mark.parametrize("chunks", [(2, 4), (8, 32)])
def test_grad_cache_equals_plain(chunks):
    q_chunk, p_chunk = chunks
    enc_q, enc_p, loss = _encoders()
    params = jax.tree_util.tree_map(np.asarray, __import__("flax").linen.meta.unbox(_init()))
    batch, rng = _batch(1), jax.random.PRNGKey(5)
    (l1, m1), g1 = jax.jit(grad_cached_value_and_grad(enc_q, enc_p, loss, query_chunk=q_chunk, passage_chunk=p_chunk))(params, batch, rng)
    (l2, m2), g2 = jax.jit(plain_value_and_grad(enc_q, enc_p, loss, query_chunk=q_chunk, passage_chunk=p_chunk))(params, batch, rng)
    assert abs(float(l1) - float(l2)) <= 1e-6
    diffs = jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), g1, g2))
    assert max(diffs) <= 1e-5
    assert max(float(np.abs(g).max()) for g in jax.tree_util.tree_leaves(g1)) > 1e-3  # gradients are not trivially zero


@pytest.mark.slow
def test_grad_cached_train_step_on_a_mesh_equals_plain():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    enc_q, enc_p, loss = _encoders()
    opt = make_optimizer(1e-3, total_steps=10, warmup_steps=2, grad_clip_norm=2.0, eps=1e-4)
    results = []
    for make in (grad_cached_value_and_grad, plain_value_and_grad):
        state, shardings = create_train_state(_init, opt, mesh, "fsdp")
        step = make_train_step(None, opt, mesh, shardings, shd.batch_sharding(mesh), "fsdp",
                               value_and_grad_fn=make(enc_q, enc_p, loss, query_chunk=4, passage_chunk=8))
        for i in range(3):
            state, metrics = step(state, shd.host_batch_to_global(_batch(i), mesh), jax.random.PRNGKey(i))
        results.append((jax.tree_util.tree_map(np.asarray, state.params), float(metrics["loss"])))
    (p1, l1), (p2, l2) = results
    assert abs(l1 - l2) <= 1e-5
    assert max(jax.tree_util.tree_leaves(jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), p1, p2))) <= 1e-5


def test_chunk_must_divide_batch():
    enc_q, enc_p, loss = _encoders()
    params = __import__("flax").linen.meta.unbox(_init())
    with pytest.raises(ValueError, match="not a multiple of the chunk size 3"):
        grad_cached_value_and_grad(enc_q, enc_p, loss, query_chunk=3, passage_chunk=8)(params, _batch(), jax.random.PRNGKey(0))


def test_chunks_are_strided_and_invert():
    x = np.arange(24).reshape(12, 2)
    chunks = np.asarray(_chunks(x, 4))
    assert chunks.shape == (3, 4, 2)
    np.testing.assert_array_equal(chunks[0][:, 0], [0, 6, 12, 18])  # rows 0, 3, 6, 9: every quarter of the batch
    np.testing.assert_array_equal(chunks[2][:, 0], [4, 10, 16, 22])
    np.testing.assert_array_equal(np.asarray(_unchunk(chunks)), x)


@pytest.mark.slow  # 40 s of XLA compilation on a 2-core VM
def test_grad_cached_step_on_a_mesh_moves_no_chunk_between_devices():
    """Chunks that are multiples of the 8 batch shards take rows from every device's block: the
    compiled step slices each chunk in place. Contiguous chunks (rows 0-7 on devices 0-3 only)
    made XLA move each chunk with collective-permutes and all-gathers inside the loop."""
    mesh = mesh_lib.make_mesh({"data": 8})
    enc_q, enc_p, loss = _encoders()
    opt = make_optimizer(1e-3, total_steps=10, warmup_steps=2, grad_clip_norm=2.0, eps=1e-4)
    state, shardings = create_train_state(_init, opt, mesh, "data_parallel")
    step = make_train_step(None, opt, mesh, shardings, shd.batch_sharding(mesh), "data_parallel",
                           value_and_grad_fn=grad_cached_value_and_grad(enc_q, enc_p, loss, query_chunk=8, passage_chunk=16))
    batch = shd.host_batch_to_global(_batch(0, questions=16), mesh)  # 2 query chunks, 4 passage chunks
    hlo = step.lower(state, batch, jax.random.PRNGKey(0)).compile().as_text()
    assert "all-reduce(" in hlo  # the gradients are summed over the data axis: the program really is partitioned
    assert "collective-permute(" not in hlo
    assert not [line for line in hlo.splitlines() if "all-gather(" in line and "dynamic_slice" in line]
