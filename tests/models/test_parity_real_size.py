"""Parity against transformers' PyTorch classes at REAL model sizes (random weights, nothing
downloaded): mT5-small scored through the chunked vocabulary log-sum-exp, mBERT-base and
XLM-R-base towers, and one mT5-XL layer at its real width.

The tiny-config tests (test_t5_parity.py, test_bert_parity.py) cover the wiring; these cover
what only shows at real sizes: mT5's 250,112-row vocabulary through the scorer's chunked
log-sum-exp, 12 real-width layers of accumulated rounding, XLM-R's 250,002-row embedding and
514 positions, and mT5-XL's 2048-wide, 32-head layer.

Every model is built from its real config with `from_config` and a fixed seed
(`torch.manual_seed`), written with `save_pretrained` (safetensors) into a temporary folder,
reloaded by transformers for the reference (`eval()`), and read by our real loading path (`hf_io.load_t5`,
`hf_io.load_bert`, `hf_io.load_model`). Each PyTorch model is freed once its reference
outputs are computed, before ours is loaded; the whole file peaks at 4.2-4.5 GB RSS and runs in
1.5-2 minutes on 2 shared CPU cores. The measured errors are in each test's docstring (the tests
print them as `PARITY ...` lines under `-s`).
"""

from __future__ import annotations

import gc
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
import transformers

from umr_jax.models import hf_io
from umr_jax.models.t5 import T5EncoderDecoder, sequence_scores, vocab_chunk_count
from tests.models.hf_reference import random_batch, torch_mean_pool

# google/mt5-small's config.json (relative_attention_max_distance absent there: default 128).
MT5_SMALL = dict(
    vocab_size=250112, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8, num_heads=6,
    relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
    layer_norm_epsilon=1e-6, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
# google/mt5-xl's width (d_model 2048, d_kv 64, d_ff 5120, 32 heads), one layer each side and a
# small vocabulary so the whole model is ~117M parameters.
MT5_XL_ONE_LAYER = dict(MT5_SMALL, vocab_size=1024, d_model=2048, d_kv=64, d_ff=5120, num_layers=1,
                        num_decoder_layers=1, num_heads=32)
# bert-base-multilingual-cased's config.json.
MBERT_BASE = dict(
    vocab_size=119547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0,
    initializer_range=0.02,
)
# xlm-roberta-base's config.json.
XLMR_BASE = dict(
    vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", max_position_embeddings=514, type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
    bos_token_id=0, eos_token_id=2, initializer_range=0.02,
)

SCORER_CHUNK = 16384  # the scorer's default vocab_chunk_size


def _perturb_vectors(model: torch.nn.Module, scale: float) -> None:
    """Add noise to every 1-D parameter (norm weights, biases): the default init makes all
    norms ones and all biases zeros, which would hide a swapped norm or bias in the mapping.
    Matrices keep transformers' own (scale-aware) init, so activations stay realistic."""
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(scale * torch.randn_like(p))


def _save(model: transformers.PreTrainedModel, folder: Path) -> None:
    # transformers 5 always writes safetensors (safe_serialization is accepted and ignored).
    model.save_pretrained(folder, safe_serialization=True)
    assert (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()


def _make_mt5(folder: Path, settings: dict, seed: int) -> transformers.PreTrainedModel:
    """An mT5 folder with an untied LM head (as real mT5 checkpoints have), reloaded by transformers."""
    torch.manual_seed(seed)
    config = transformers.MT5Config(**settings)
    model = transformers.AutoModelForSeq2SeqLM.from_config(config)
    assert type(model) is transformers.MT5ForConditionalGeneration
    with torch.no_grad():
        # transformers 5 forces a tied head on MT5Config; give the head its own weights (std 1,
        # HF's init for an untied T5 head) so the folder holds a separate lm_head.weight.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(config.vocab_size, config.d_model))
    _perturb_vectors(model, 0.1)
    _save(model, folder)
    del model
    gc.collect()
    reloaded = transformers.MT5ForConditionalGeneration.from_pretrained(folder).eval()
    assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight), "fixture must have an untied head"
    return reloaded


def _t5_batch(seed: int, batch: int, src_lengths: list[int], tgt_lengths: list[int], vocab: int):
    rng = np.random.RandomState(seed)
    src, src_mask = random_batch(rng, batch, max(src_lengths), vocab, 0, lengths=src_lengths)
    tgt, tgt_mask = random_batch(rng, batch, max(tgt_lengths), vocab, 0, lengths=tgt_lengths)
    return src, src_mask, tgt, tgt_mask


def _torch_t5(model, src, src_mask, tgt, tgt_mask):
    """PyTorch reference: log_softmax of the full fp32 logits gathered at the targets (padding
    -> 0), and the encoder's last hidden state."""
    labels = torch.tensor(np.where(tgt_mask > 0, tgt, -100), dtype=torch.long)
    with torch.no_grad():
        out = model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(src_mask), labels=labels)
        log_probs = torch.log_softmax(out.logits, -1).gather(-1, torch.tensor(tgt, dtype=torch.long)[..., None])[..., 0]
    return log_probs.numpy() * tgt_mask, out.encoder_last_hidden_state.numpy()


def _our_token_log_probs(loaded, config, batch) -> np.ndarray:
    module = T5EncoderDecoder(config)
    fn = jax.jit(lambda params, *args: module.apply({"params": params}, *args, method="token_log_probs"))
    out = np.asarray(fn(loaded.params, *batch))
    assert out.dtype == np.float32
    return out


def _errors(ours: np.ndarray, ref: np.ndarray, where: np.ndarray | None = None) -> tuple[float, float]:
    """(max absolute error, the same relative to the reference's largest magnitude)."""
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    if where is not None:
        ours, ref = ours[where], ref[where]
    err = float(np.abs(ours - ref).max())
    return err, err / float(np.abs(ref).max())


def _report(name: str, **numbers: float) -> None:
    print(f"\nPARITY {name}: " + ", ".join(f"{k}={v:.3e}" for k, v in numbers.items()))


# ---------------------------------------------------------------------------------------------
# mT5-small through the scorer's chunked log-sum-exp


@pytest.fixture(scope="module")
def mt5_small(tmp_path_factory):
    """(loaded model, batch, torch token log-probs): batch 3, sources 64/41/23, targets 32/19/7."""
    folder = tmp_path_factory.mktemp("mt5-small")
    torch_model = _make_mt5(folder, MT5_SMALL, seed=0)
    batch = _t5_batch(0, 3, [64, 41, 23], [32, 19, 7], MT5_SMALL["vocab_size"])
    ref, _ = _torch_t5(torch_model, *batch)
    del torch_model
    gc.collect()
    loaded = hf_io.load_t5(folder, dropout_rate=0.0, vocab_chunk_size=SCORER_CHUNK)
    assert not loaded.config.tie_word_embeddings and not loaded.config.scale_decoder_outputs
    assert loaded.config.is_gated_act and loaded.config.dense_act_fn == "gelu_new"
    yield loaded, batch, ref
    del loaded
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("chunk", [SCORER_CHUNK, 700], ids=["strided-16x15632", "ragged-357x700+212"])
def test_mt5_small_token_log_probs_fp32(mt5_small, chunk):
    """mT5-small, fp32: our chunked log-sum-exp against torch's log_softmax of the full logits.

    250112 = 2**8 * 977, so the scorer's chunk of 16384 splits the vocabulary into 16 EQUAL
    strided chunks of 15632 rows (no ragged chunk: `vocab_chunk_count` prefers equal chunks);
    the contiguous-slices-plus-remainder path only runs for this vocabulary with a chunk under
    977 rows, so chunk 700 (357 chunks + 212 rows) covers that path at real size too.

    HF's init (untied head with std 1, unit-scale final norm) gives logits of std ~23, so the
    target log-probs here range -171..-57, sharper than a trained model's; errors scale with
    the logits, hence tolerances relative to the largest |log-prob|.

    Measured here, both chunkings: max abs error 1.7e-4 (9.8e-7 of the largest |log-prob|,
    1.7e-6 / 1.9e-6 element-wise relative); mean sequence score off by 1.8e-5 / 3.3e-5
    (~2e-7 relative). Tolerance: 1e-4 relative to the largest |log-prob|, element-wise and on
    the mean score rtol 1e-4 (atol 1e-4, a floor for values near 0 that these never reach).
    """
    loaded, batch, ref = mt5_small
    assert vocab_chunk_count(MT5_SMALL["vocab_size"], SCORER_CHUNK) == 16
    assert vocab_chunk_count(MT5_SMALL["vocab_size"], 700) is None
    tgt_mask = batch[3]
    ours = _our_token_log_probs(loaded, loaded.config.replace(vocab_chunk_size=chunk), batch)
    assert np.all(ours[tgt_mask == 0] == 0.0)
    real = tgt_mask > 0
    err, rel = _errors(ours, ref, real)
    elem = float((np.abs(ours - ref)[real] / np.abs(ref)[real]).max())
    mean = np.asarray(sequence_scores(ours, tgt_mask, "mean"))
    ref_mean = ref.astype(np.float64).sum(-1) / tgt_mask.sum(-1)
    mean_err = float(np.abs(mean - ref_mean).max())
    _report(f"mt5-small fp32 chunk={chunk}", max_abs=err, rel_to_max=rel, elementwise_rel=elem, mean_score_abs=mean_err,
            ref_min=float(ref[real].min()), ref_max=float(ref[real].max()))
    assert rel <= 1e-4, rel
    np.testing.assert_allclose(ours[real], ref[real], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_mt5_small_token_log_probs_bf16(mt5_small):
    """mT5-small with bfloat16 compute (the scorer's production dtype; fp32 params, fp32 head
    accumulation and log-sum-exp) against torch fp32.

    bf16 keeps 8 significant bits (unit roundoff 2**-9 ~ 2e-3): every matmul input and
    residual add over 8 encoder + 8 decoder layers is rounded to that. Probed on this model,
    the encoder / decoder output states end 1.3% / 1.5% RMS-relative off the fp32 ones, and a
    logit of std ~23 (HF's init: untied head with std 1) inherits that: up to 1.9 absolute,
    partly cancelled in logit - logsumexp.

    Measured here: token log-probs (range -171..-57) max abs error 0.93, 5.5e-3 of the largest
    |log-prob| (median 0.34); per-sequence mean score off by 0.30 at most, 2.8e-3 of its
    magnitude (means ~ -98..-110). Tolerances, ~2x the measurement: token log-probs 1e-2 of
    the largest |log-prob|, each mean score 6e-3 relative (the ranking signal the scorer uses).
    """
    loaded, batch, ref = mt5_small
    tgt_mask = batch[3]
    ours = _our_token_log_probs(loaded, loaded.config.replace(dtype="bfloat16"), batch)
    assert np.all(ours[tgt_mask == 0] == 0.0)
    real = tgt_mask > 0
    err, rel = _errors(ours, ref, real)
    median = float(np.median(np.abs(ours - ref)[real]))
    mean = np.asarray(sequence_scores(ours, tgt_mask, "mean"))
    ref_mean = ref.astype(np.float64).sum(-1) / tgt_mask.sum(-1)
    mean_err = float(np.abs(mean - ref_mean).max())
    mean_rel = float((np.abs(mean - ref_mean) / np.abs(ref_mean)).max())
    _report("mt5-small bf16", max_abs=err, rel_to_max=rel, median_abs=median, mean_score_abs=mean_err,
            mean_score_rel=mean_rel, ref_mean_min=float(ref_mean.min()), ref_mean_max=float(ref_mean.max()))
    assert rel <= 1e-2, rel
    assert mean_rel <= 6e-3, mean_rel


# ---------------------------------------------------------------------------------------------
# mBERT-base and XLM-R-base towers


def _make_tower(name: str, folder: Path, seed: int) -> transformers.PreTrainedModel:
    torch.manual_seed(seed)
    config = transformers.BertConfig(**MBERT_BASE) if name == "mbert-base" else transformers.XLMRobertaConfig(**XLMR_BASE)
    model = transformers.AutoModel.from_config(config)  # BertModel / XLMRobertaModel, with pooler as the checkpoints
    _perturb_vectors(model, 0.05)
    _save(model, folder)
    del model
    gc.collect()
    return transformers.AutoModel.from_pretrained(folder).eval()


TOWERS = {"mbert-base": (MBERT_BASE, hf_io.load_bert), "xlmr-base": (XLMR_BASE, hf_io.load_model)}


@pytest.fixture(scope="module", params=sorted(TOWERS))
def real_tower(request, tmp_path_factory):
    """(name, folder, batch, torch last_hidden_state): batch 4, lengths 48/37/9/26.
    Parametrised, so each tower's memory is released before the next one is built."""
    name = request.param
    settings, _ = TOWERS[name]
    folder = tmp_path_factory.mktemp(name)
    torch_model = _make_tower(name, folder, seed=1)
    rng = np.random.RandomState(7)
    ids, mask = random_batch(rng, 4, 48, settings["vocab_size"], settings["pad_token_id"], lengths=[48, 37, 9, 26])
    with torch.no_grad():
        hidden = torch_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state
    del torch_model
    gc.collect()
    yield name, folder, (ids, mask), hidden
    gc.collect()


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_real_tower_pooled_embeddings_fp32(real_tower, pooling):
    """mBERT-base (bert-base-multilingual-cased config) and XLM-R base (xlm-roberta-base config),
    fp32, loaded with `hf_io.load_bert` / `hf_io.load_model`: pooled embeddings against torch's
    last_hidden_state pooled the same way (mean over the attention mask, or position 0).

    Measured here (max abs, and relative to the largest |value|): mBERT mean 1.1e-6 (3.8e-7),
    CLS 3.5e-6 (9.1e-7), hidden states at real tokens 5.0e-6 (9.2e-7); XLM-R mean 1.3e-6
    (4.3e-7), CLS 3.6e-6 (8.8e-7), hidden states 4.3e-6 (9.1e-7). Tolerance: 1e-4 relative to
    the largest |value| (post-norm layers keep activations O(1-5), so fp32 reordering noise
    between XLA and torch stays ~1e-6 even after 12 layers).
    """
    name, folder, (ids, mask), hidden = real_tower
    settings, load = TOWERS[name]
    tower = load(folder, pooling=pooling)
    cfg = tower.config
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (settings["vocab_size"], 768, 12)
    assert cfg.max_position_embeddings == settings["max_position_embeddings"] and cfg.pooling == pooling
    assert cfg.roberta_positions == (name == "xlmr-base")
    ref = torch_mean_pool(hidden, mask) if pooling == "mean" else hidden[:, 0].numpy()
    fn = jax.jit(lambda params, ids, mask: tower.module.apply({"params": params}, ids, mask))
    ours = np.asarray(fn(tower.params, ids, mask))
    err, rel = _errors(ours, ref)
    numbers = dict(max_abs=err, rel_to_max=rel)
    if pooling == "mean":  # the hidden states themselves, at real tokens
        states = jax.jit(lambda params, ids, mask: tower.module.apply({"params": params}, ids, mask, method="hidden_states"))
        h_err, h_rel = _errors(np.asarray(states(tower.params, ids, mask)), hidden.numpy(), mask.astype(bool))
        numbers.update(hidden_max_abs=h_err, hidden_rel_to_max=h_rel)
        assert h_rel <= 1e-4, h_rel
    _report(f"{name} {pooling} fp32", **numbers)
    assert rel <= 1e-4, rel


# ---------------------------------------------------------------------------------------------
# One mT5-XL layer at its real width


@pytest.mark.slow
def test_mt5_xl_width_one_layer_fp32(tmp_path):
    """One encoder and one decoder layer of mT5-XL's real width (d_model 2048, d_kv 64, d_ff 5120,
    32 heads, gated-GELU, untied head) and a 1024-row vocabulary, fp32, loaded with
    `hf_io.load_model`: encoder hidden states and token log-probs against torch.

    Measured here: encoder states 2.7e-6 abs (5.3e-7 of the largest |value|; the same
    including padded positions); token log-probs (range -213..-39) 1.4e-4 abs (6.4e-7 of the
    largest |log-prob|). Tolerance: 1e-4 relative to the largest |value|; log-probs also
    element-wise rtol 1e-4 (atol 1e-4).
    """
    folder = tmp_path / "mt5-xl-1layer"
    torch_model = _make_mt5(folder, MT5_XL_ONE_LAYER, seed=2)
    batch = _t5_batch(3, 2, [56, 33], [24, 11], MT5_XL_ONE_LAYER["vocab_size"])
    src, src_mask, _, tgt_mask = batch
    ref, ref_encoded = _torch_t5(torch_model, *batch)
    del torch_model
    gc.collect()
    loaded = hf_io.load_model(folder, dropout_rate=0.0)
    cfg = loaded.config
    assert loaded.family == "t5" and (cfg.d_model, cfg.d_ff, cfg.num_heads, cfg.d_kv) == (2048, 5120, 32, 64)
    assert not cfg.tie_word_embeddings
    module = T5EncoderDecoder(cfg)
    encode = jax.jit(lambda params, ids, mask: module.apply({"params": params}, ids, mask, method="encode"))
    encoded = np.asarray(encode(loaded.params, src, src_mask))
    real_src = src_mask.astype(bool)
    enc_err, enc_rel = _errors(encoded, ref_encoded, real_src)
    enc_all, _ = _errors(encoded, ref_encoded)
    ours = _our_token_log_probs(loaded, cfg, batch)
    real = tgt_mask > 0
    err, rel = _errors(ours, ref, real)
    _report("mt5-xl-width 1 layer fp32", encoder_max_abs=enc_err, encoder_rel_to_max=enc_rel,
            encoder_max_abs_incl_padding=enc_all, log_prob_max_abs=err, log_prob_rel_to_max=rel,
            ref_min=float(ref[real].min()), ref_max=float(ref[real].max()))
    assert enc_rel <= 1e-4, enc_rel
    assert rel <= 1e-4, rel
    np.testing.assert_allclose(ours[real], ref[real], rtol=1e-4, atol=1e-4)
    assert np.all(ours[~real] == 0.0)
