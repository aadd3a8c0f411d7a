"""Layers scanned over depth (`scan_layers=True`): the same function as unrolled layers, the
same Hugging Face checkpoints in and out, and the same gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from umr_jax.models import hf_io
from umr_jax.models.layers import stack_layers, unstack_layers
from umr_jax.models.t5 import shift_right
from tests.models.hf_reference import BERT_WORDS, T5_VOCAB, make_bert, make_mt5, make_xlmr, random_batch, torch_mean_pool


def _batch(vocab, pad, seed=0, rows=4, length=30):
    return random_batch(np.random.RandomState(seed), rows, length, vocab, pad, lengths=[length, 17, 5, 24][:rows])


@pytest.mark.parametrize("make,vocab,pad", [(make_bert, len(BERT_WORDS), 0), (make_xlmr, 120, 1)], ids=["bert", "xlm-roberta"])
def test_scanned_bert_tower_matches_pytorch_and_unrolled(tmp_path, make, vocab, pad):
    torch_model = make(tmp_path / "m")
    unrolled = hf_io.load_bert(tmp_path / "m")
    scanned = hf_io.load_bert(tmp_path / "m", scan_layers=True)
    layers = torch_model.config.num_hidden_layers
    assert "layers" in scanned.params and not any(k.startswith("layers_") for k in scanned.params)
    assert scanned.params["layers"]["intermediate"]["kernel"].shape[0] == layers
    ids, mask = _batch(vocab, pad)
    with torch.no_grad():
        hidden = torch_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state
    ours = np.asarray(scanned.module.apply({"params": scanned.params}, ids, mask))
    assert np.abs(ours - torch_mean_pool(hidden, mask)).max() <= 1e-5
    assert np.abs(ours - np.asarray(unrolled.module.apply({"params": unrolled.params}, ids, mask))).max() <= 1e-6


def test_scanned_t5_log_probs_match_pytorch_and_export_round_trips(tmp_path):
    torch_model = make_mt5(tmp_path / "mt5")
    scanned = hf_io.load_t5(tmp_path / "mt5", scan_layers=True)
    assert scanned.params["encoder"]["layers"]["mlp"]["wo"]["kernel"].shape[0] == torch_model.config.num_layers
    assert scanned.params["decoder"]["layers"]["cross_attention"]["q"]["kernel"].shape[0] == torch_model.config.num_decoder_layers
    rng = np.random.RandomState(3)
    src, src_mask = random_batch(rng, 3, 40, T5_VOCAB, 0, lengths=[40, 27, 33])
    tgt, tgt_mask = random_batch(rng, 3, 21, T5_VOCAB, 0, lengths=[21, 21, 12])
    labels = torch.tensor(np.where(tgt_mask > 0, tgt, -100), dtype=torch.long)
    with torch.no_grad():
        logits = torch_model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(src_mask), labels=labels).logits
    ref = torch.log_softmax(logits, -1).gather(-1, torch.tensor(tgt, dtype=torch.long)[..., None])[..., 0].numpy() * tgt_mask
    ours = scanned.module.apply({"params": scanned.params}, src, src_mask, tgt, tgt_mask, method="token_log_probs")
    assert np.abs(np.asarray(ours) * tgt_mask - ref).max() <= 1e-4
    # Exported from the scanned tree, it is an ordinary HF checkpoint with unrolled layers.
    out = hf_io.export_model(tmp_path / "exported", scanned.config, scanned.params, family="t5")
    reloaded = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    for name, tensor in torch_model.state_dict().items():
        np.testing.assert_array_equal(reloaded.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    full = scanned.module.apply({"params": scanned.params}, src, src_mask, shift_right(jnp.asarray(tgt), 0))
    assert np.abs(np.asarray(full) - logits.numpy()).max() <= 1e-4


def test_scanned_gradients_equal_unrolled(tmp_path):
    make_bert(tmp_path / "m")
    unrolled = hf_io.load_bert(tmp_path / "m", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    scanned = hf_io.load_bert(tmp_path / "m", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, scan_layers=True)
    ids, mask = _batch(len(BERT_WORDS), 0, 1)

    def grads(model):
        loss = lambda p: jnp.sum(model.module.apply({"params": p}, ids, mask, deterministic=False) ** 2)  # noqa: E731
        return jax.grad(loss)(jax.tree_util.tree_map(jnp.asarray, model.params))

    g_scanned = unstack_layers(jax.tree_util.tree_map(np.asarray, grads(scanned)))
    g_unrolled = jax.tree_util.tree_map(np.asarray, grads(unrolled))
    assert jax.tree_util.tree_structure(g_scanned) == jax.tree_util.tree_structure(g_unrolled)
    for a, b in zip(jax.tree_util.tree_leaves(g_scanned), jax.tree_util.tree_leaves(g_unrolled)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_stack_and_unstack_are_inverse_and_refuse_gaps():
    tree = {"embeddings": {"w": np.ones(3)}, "layers_0": {"w": np.zeros(2)}, "layers_1": {"w": np.ones(2)},
            "enc": {"layers_0": {"b": np.full(1, 5.0)}}}
    stacked = stack_layers(tree)
    assert stacked["layers"]["w"].tolist() == [[0, 0], [1, 1]] and stacked["enc"]["layers"]["b"].shape == (1, 1)
    back = unstack_layers(stacked)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(tree)))
    with pytest.raises(ValueError, match="not numbered"):
        stack_layers({"layers_0": {"w": np.ones(1)}, "layers_2": {"w": np.ones(1)}})


def test_layer_axis_is_never_sharded(tmp_path):
    from umr_jax.parallel import sharding as shd
    from umr_jax.parallel.mesh import make_mesh

    make_bert(tmp_path / "m")
    scanned = hf_io.load_bert(tmp_path / "m", scan_layers=True)
    mesh = make_mesh({"data": 1, "fsdp": -1, "model": 1})
    ids = np.ones((1, 4), np.int32)
    shardings = shd.abstract_shardings(scanned.module, (ids, ids), mesh, "fsdp_tp")
    spec = shardings["layers"]["intermediate"]["kernel"].spec
    assert spec[0] is None and spec[1] == "fsdp"


@pytest.mark.parametrize("remat", ["minimal", "full"])
def test_rematerialised_layers_give_the_same_gradients(tmp_path, remat):
    """Recomputing a layer in the backward pass (dropout on: the same masks are drawn again)
    changes what is stored, not the gradient."""
    make_bert(tmp_path / "m")
    plain = hf_io.load_bert(tmp_path / "m", scan_layers=True)
    remade = hf_io.load_bert(tmp_path / "m", scan_layers=True, remat=remat)
    ids, mask = _batch(len(BERT_WORDS), 0, 2)
    params = jax.tree_util.tree_map(jnp.asarray, plain.params)

    def grads(model):
        def loss(p):
            out = model.module.apply({"params": p}, ids, mask, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
            return jnp.sum(out**2)

        return jax.tree_util.tree_leaves(jax.jit(jax.grad(loss))(params))

    for a, b in zip(grads(remade), grads(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
