"""Our Flax T5/mT5 against the Hugging Face PyTorch models: logits, log-likelihoods, towers, export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

import jax.numpy as jnp

from umr_jax.models import hf_io
from umr_jax.models.t5 import T5EncoderDecoder, relative_position_buckets, sequence_scores, shift_right
from tests.models.hf_reference import T5_VOCAB, make_mt5, make_t5_original, random_batch, torch_mean_pool

FAMILIES = {"mt5-gated-gelu-untied": make_mt5, "t5-relu-tied": make_t5_original}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def t5_pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    torch_model = FAMILIES[request.param](folder)
    return torch_model, hf_io.load_t5(folder), folder


def _batch(seed=0):
    rng = np.random.RandomState(seed)
    src, src_mask = random_batch(rng, 3, 40, T5_VOCAB, 0, lengths=[40, 27, 33])
    tgt, tgt_mask = random_batch(rng, 3, 21, T5_VOCAB, 0, lengths=[21, 21, 12])
    return src, src_mask, tgt, tgt_mask


def _torch_reference(model, src, src_mask, tgt, tgt_mask):
    labels = torch.tensor(np.where(tgt_mask > 0, tgt, -100), dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(src_mask), labels=labels)
    logits = out.logits.numpy()
    log_probs = torch.log_softmax(out.logits, -1).gather(-1, torch.tensor(tgt, dtype=torch.long)[..., None])[..., 0]
    return logits, log_probs.numpy() * tgt_mask


def test_config_mapping(t5_pair):
    torch_model, loaded, _ = t5_pair
    cfg = loaded.config
    assert cfg.is_gated_act == torch_model.config.is_gated_act
    assert cfg.dense_act_fn == torch_model.config.dense_act_fn
    assert cfg.num_layers == torch_model.config.num_layers
    assert cfg.num_decoder_layers == torch_model.config.num_decoder_layers
    untied = not torch.equal(torch_model.lm_head.weight, torch_model.shared.weight)
    assert cfg.tie_word_embeddings == (not untied)
    assert cfg.scale_decoder_outputs == bool(getattr(torch_model.config, "scale_decoder_outputs", False))


def test_logits_match_pytorch(t5_pair):
    torch_model, loaded, _ = t5_pair
    src, src_mask, tgt, tgt_mask = _batch()
    ref_logits, _ = _torch_reference(torch_model, src, src_mask, tgt, tgt_mask)
    logits = loaded.module.apply({"params": loaded.params}, src, src_mask, shift_right(jnp.asarray(tgt), 0))
    diff = np.abs(np.asarray(logits) - ref_logits).max()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize("vocab_chunk_size", [0, 32, 64, 150])
def test_token_log_probs_match_pytorch(t5_pair, vocab_chunk_size):
    torch_model, loaded, _ = t5_pair
    src, src_mask, tgt, tgt_mask = _batch(1)
    _, ref = _torch_reference(torch_model, src, src_mask, tgt, tgt_mask)
    module = T5EncoderDecoder(loaded.config.replace(vocab_chunk_size=vocab_chunk_size))
    log_probs = np.asarray(module.apply({"params": loaded.params}, src, src_mask, tgt, tgt_mask, method="token_log_probs"))
    assert np.abs(log_probs - ref).max() <= 1e-4
    assert np.all(log_probs[tgt_mask == 0] == 0.0)
    # The sequence score the scorer uses: mean (UMR) and sum (UPR) over real target tokens.
    mean = np.asarray(sequence_scores(log_probs, tgt_mask, "mean"))
    total = np.asarray(sequence_scores(log_probs, tgt_mask, "sum"))
    np.testing.assert_allclose(total, ref.sum(-1), atol=1e-3)
    np.testing.assert_allclose(mean, ref.sum(-1) / tgt_mask.sum(-1), atol=1e-4)


def test_bf16_path_within_one_percent(t5_pair):
    torch_model, loaded, _ = t5_pair
    src, src_mask, tgt, tgt_mask = _batch(2)
    _, ref = _torch_reference(torch_model, src, src_mask, tgt, tgt_mask)
    module = T5EncoderDecoder(loaded.config.replace(dtype="bfloat16"))
    log_probs = np.asarray(module.apply({"params": loaded.params}, src, src_mask, tgt, tgt_mask, method="token_log_probs"))
    assert log_probs.dtype == np.float32
    rel = np.abs(log_probs - ref).max() / np.abs(ref).max()
    assert rel <= 1e-2, rel


def test_swapped_layers_break_parity(t5_pair):
    torch_model, loaded, _ = t5_pair
    src, src_mask, tgt, tgt_mask = _batch(3)
    _, ref = _torch_reference(torch_model, src, src_mask, tgt, tgt_mask)
    params = dict(loaded.params)
    encoder = dict(params["encoder"])
    encoder["layers_0"], encoder["layers_1"] = encoder["layers_1"], encoder["layers_0"]
    params["encoder"] = encoder
    log_probs = np.asarray(loaded.module.apply({"params": params}, src, src_mask, tgt, tgt_mask, method="token_log_probs"))
    assert np.abs(log_probs - ref).max() > 1e-2


@pytest.mark.parametrize("bidirectional,buckets,max_distance", [(True, 32, 128), (False, 32, 128), (True, 16, 24), (False, 8, 20)])
def test_relative_position_buckets_match_hf(bidirectional, buckets, max_distance):
    q, k = 300, 310
    ctx = torch.arange(q)[:, None]
    mem = torch.arange(k)[None, :]
    ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
        mem - ctx, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance
    ).numpy()
    ours = relative_position_buckets(q, k, bidirectional=bidirectional, num_buckets=buckets, max_distance=max_distance)
    np.testing.assert_array_equal(ours, ref)
    assert ours.max() == buckets - 1


def test_encoder_tower_matches_pytorch_encoder(tmp_path):
    folder = tmp_path / "mt5"
    make_mt5(folder)
    tower = hf_io.load_t5(folder, encoder_only=True)
    assert "lm_head.weight" in tower.ignored and any(n.startswith("decoder.") for n in tower.ignored)
    encoder = transformers.MT5EncoderModel.from_pretrained(folder).eval()
    src, src_mask, _, _ = _batch(4)
    with torch.no_grad():
        hidden = encoder(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(src_mask)).last_hidden_state
    ref = torch_mean_pool(hidden, src_mask)
    ours = np.asarray(tower.module.apply({"params": tower.params}, src, src_mask))
    assert np.abs(ours - ref).max() <= 1e-5


def test_export_reloads_in_pytorch(t5_pair, tmp_path):
    torch_model, loaded, _ = t5_pair
    out = hf_io.export_model(tmp_path / "exported", loaded.config, loaded.params, family="t5")
    cls = transformers.AutoModelForSeq2SeqLM
    reloaded = cls.from_pretrained(out).eval()
    src, src_mask, tgt, tgt_mask = _batch(5)
    ref_logits, _ = _torch_reference(torch_model, src, src_mask, tgt, tgt_mask)
    logits, _ = _torch_reference(reloaded, src, src_mask, tgt, tgt_mask)
    assert np.abs(logits - ref_logits).max() <= 1e-5
    again = hf_io.load_t5(out)
    assert again.config.replace(model_type=loaded.config.model_type) == loaded.config
