"""Dual encoder: shared or separate towers, dot/cosine similarity with a scale."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from umr_jax.models import BertConfig, BertEncoderTower, DualEncoder, T5Config, T5EncoderTower, similarity_matrix

TINY_BERT = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=32)
TINY_T5 = T5Config(vocab_size=50, d_model=16, d_kv=4, d_ff=24, num_layers=2, num_decoder_layers=2, num_heads=4, is_gated_act=True, dense_act_fn="gelu_new")


def _inputs(seed, batch, length):
    rng = np.random.RandomState(seed)
    ids = rng.randint(1, 50, (batch, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, length // 2 :] = 0
    return ids, mask


def test_similarity_matrix_against_numpy():
    rng = np.random.RandomState(0)
    q, p = rng.randn(3, 8).astype(np.float32), rng.randn(5, 8).astype(np.float32)
    np.testing.assert_allclose(similarity_matrix(q, p), q @ p.T, rtol=1e-5)
    np.testing.assert_allclose(similarity_matrix(q, p, "dot", scale=768**-0.5), q @ p.T / np.sqrt(768), rtol=1e-5)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    pn = p / np.linalg.norm(p, axis=1, keepdims=True)
    np.testing.assert_allclose(similarity_matrix(q, p, "cosine", scale=20.0), 20.0 * qn @ pn.T, rtol=1e-5)
    with pytest.raises(ValueError, match="similarity"):
        similarity_matrix(q, p, "l2")


@pytest.mark.parametrize("tower_factory", [lambda: BertEncoderTower(TINY_BERT), lambda: T5EncoderTower(TINY_T5)])
def test_shared_and_separate_towers(tower_factory):
    q_ids, q_mask = _inputs(1, 3, 7)
    p_ids, p_mask = _inputs(2, 4, 12)
    shared = DualEncoder(tower_factory())
    params = shared.init(jax.random.PRNGKey(0), q_ids, q_mask, p_ids, p_mask)["params"]
    assert set(params) == {"query_tower"}
    separate = DualEncoder(tower_factory(), tower_factory())
    sep_params = separate.init(jax.random.PRNGKey(0), q_ids, q_mask, p_ids, p_mask)["params"]
    assert set(sep_params) == {"query_tower", "passage_tower"}

    # Scores are the dot products of the two encodings.
    scores = np.asarray(shared.apply({"params": params}, q_ids, q_mask, p_ids, p_mask))
    q = np.asarray(shared.apply({"params": params}, q_ids, q_mask, method="encode_queries"))
    p = np.asarray(shared.apply({"params": params}, p_ids, p_mask, method="encode_passages"))
    assert scores.shape == (3, 4)
    np.testing.assert_allclose(scores, q @ p.T, rtol=1e-5, atol=1e-5)

    # Separate towers started from the same weights (as UMR does) score exactly like the shared one...
    same = {"query_tower": params["query_tower"], "passage_tower": params["query_tower"]}
    np.testing.assert_allclose(separate.apply({"params": same}, q_ids, q_mask, p_ids, p_mask), scores, rtol=1e-6)
    # ...and diverge once the passage tower's weights differ.
    moved = jax.tree_util.tree_map(lambda x: x * 1.1, params["query_tower"])
    diverged = separate.apply({"params": {"query_tower": params["query_tower"], "passage_tower": moved}}, q_ids, q_mask, p_ids, p_mask)
    assert np.abs(np.asarray(diverged) - scores).max() > 1e-3


def test_padding_does_not_change_pooled_embedding():
    tower = BertEncoderTower(TINY_BERT)
    ids, mask = _inputs(3, 2, 10)
    params = tower.init(jax.random.PRNGKey(1), ids, mask)["params"]
    padded_ids = np.concatenate([ids, np.zeros((2, 6), np.int32)], axis=1)
    padded_mask = np.concatenate([mask, np.zeros((2, 6), np.int32)], axis=1)
    a = np.asarray(tower.apply({"params": params}, ids, mask))
    b = np.asarray(tower.apply({"params": params}, padded_ids, padded_mask))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_every_parameter_has_logical_axes():
    import flax.linen as nn

    ids, mask = _inputs(0, 2, 6)
    for module, args in [
        (BertEncoderTower(TINY_BERT.replace(has_pooler=True)), (ids, mask)),
        (T5EncoderTower(TINY_T5), (ids, mask)),
    ]:
        boxed = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *args))["params"]
        leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        assert leaves and all(isinstance(leaf, nn.LogicallyPartitioned) for leaf in leaves)
        for leaf in leaves:
            assert len(leaf.names) == len(leaf.value.shape)
