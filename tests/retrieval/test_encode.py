"""The tower: equal to a direct tower call (BERT/XLM-R and T5 encoder), 8 devices equal 1, bf16 close."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from umr_jax.errors import ModelLoadError
from umr_jax.models import hf_io
from umr_jax.parallel.mesh import make_mesh
from umr_jax.retrieval.encode import TowerEncoder
from tests.retrieval.towers import demo_passages, demo_questions, make_mt5_tower, encoder8, xlmr_folder  # noqa: F401 (fixtures)




def _direct(folder, first, second=None, max_length=128, **load_options):
    """The tower applied to one padded batch, without our pipeline, mesh or jit."""
    loaded = hf_io.load_model(folder, **load_options)
    tokenizer = hf_io.load_tokenizer(folder)
    tokens = tokenizer(first, second, truncation="longest_first" if second else True, max_length=max_length,
                       padding="max_length", return_tensors="np")
    return np.asarray(loaded.module.apply({"params": loaded.params}, tokens["input_ids"].astype(np.int32),
                                          tokens["attention_mask"].astype(np.int32)))


def test_passage_encoding_equals_direct_tower_call(xlmr_folder, encoder8):
    passages = demo_passages(40)
    embeddings, ids = encoder8.encode_records(passages, kind="passages", max_length=128, batch_size=16)
    assert ids == [p.id for p in passages]
    reference = _direct(xlmr_folder, [p.title for p in passages], [p.text for p in passages], max_length=128)
    assert embeddings.shape == (40, 32)
    np.testing.assert_allclose(embeddings, reference, atol=1e-5, rtol=0)
    # Bucketed static shapes: at most one compiled program per length bucket (16, 32, 64, 128).
    assert 1 <= encoder8._embed._cache_size() <= 4


def test_t5_tower_encodes_queries_as_a_direct_call(tmp_path):
    folder = make_mt5_tower(tmp_path / "mt5")
    with pytest.raises(ModelLoadError, match="load it as a tower") as refused:
        TowerEncoder(folder, mesh=make_mesh({"data": -1}))
    assert [hint.flag for hint in refused.value.hints] == ["--as-tower"]  # shown by commands that have it
    encoder = TowerEncoder(folder, mesh=make_mesh({"data": -1}), as_tower=True, dtype="float32")
    questions = demo_questions(14)
    embeddings, ids = encoder.encode_records(questions, kind="queries", batch_size=8)
    assert ids == [q.id for q in questions] and encoder.pooling == "mean"
    reference = _direct(folder, [q.question for q in questions], max_length=64, as_tower=True)
    np.testing.assert_allclose(embeddings, reference, atol=1e-5, rtol=0)


def test_eight_devices_equal_one_and_bf16_is_close(xlmr_folder, encoder8):
    passages = demo_passages(48)
    one = TowerEncoder(xlmr_folder, mesh=make_mesh({"data": -1}, jax.devices()[:1]), dtype="float32")
    assert (one.batch_devices, encoder8.batch_devices) == (1, 8)
    e1, ids1 = one.encode_records(passages, max_length=64, batch_size=24)
    e8, ids8 = encoder8.encode_records(passages, max_length=64, batch_size=24)
    assert ids1 == ids8
    np.testing.assert_allclose(e8, e1, atol=1e-6, rtol=0)
    bf16 = TowerEncoder(xlmr_folder, mesh=make_mesh({"data": -1}))  # the default compute dtype
    eb, _ = bf16.encode_records(passages, max_length=64, batch_size=24)
    error = np.abs(eb - e1).max() / np.abs(e1).max()
    assert 0 < error < 0.05
