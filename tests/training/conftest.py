"""Fixtures shared by the trainer tests."""

from __future__ import annotations

import flax.linen
import jax
import numpy as np
import pytest

from umr_jax.demo import demo_paths
from umr_jax.models import BertConfig, BertEncoderTower, hf_io


@pytest.fixture(scope="module")
def tiny_retriever(tmp_path_factory):
    tokenizer = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=48, max_position_embeddings=160, type_vocab_size=1, layer_norm_eps=1e-5,
                     pad_token_id=tokenizer.pad_token_id, model_type="xlm-roberta")
    ids = np.full((1, 4), 5, np.int32)
    params = jax.tree_util.tree_map(np.asarray, flax.linen.meta.unbox(
        BertEncoderTower(cfg).init(jax.random.PRNGKey(0), ids, np.ones_like(ids))["params"]))
    return hf_io.export_model(tmp_path_factory.mktemp("retriever") / "tower", cfg, params, family="bert", tokenizer=tokenizer)
