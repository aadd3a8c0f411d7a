"""T5 / mT5 in Flax Linen: the stage-1 scorer (encoder-decoder) and a T5 encoder tower.

Covers both families Hugging Face serves from one code path:
- original T5: ReLU feed-forward, LM head tied to the shared embedding, decoder output scaled
  by d_model**-0.5 before the head;
- T5 v1.1 / mT5: gated-GELU (tanh form) feed-forward, untied LM head, no output scaling.

Parameter tree (names are ours; `hf_io` maps them to Hugging Face names):
  shared/embedding [vocab, embed]
  encoder/relpos_bias/embedding [buckets, heads]
  encoder/layers_{i}/{self_attention_norm, self_attention/{q,k,v,o}, mlp_norm, mlp/{wi|wi_0,wi_1, wo}}
    (with `scan_layers`: one `layers/...` whose leaves have a leading [num_layers] axis)
  encoder/final_norm
  decoder/... as encoder plus cross_attention_norm, cross_attention/{q,k,v,o}
  lm_head [vocab, embed]            (untied models only)

One cohesive thing: the T5 model (config, attention, blocks, stacks, the scorer and the tower
built from them, and the scorer's helpers: vocabulary-chunked log-probs, sequence scores), whose
parts only make sense together; ~450 lines.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn

from umr_jax.models.layers import (
    RMSNorm,
    activation,
    attention_bias_from_mask,
    causal_bias,
    dense,
    dot_product_attention,
    dtype_of,
    embedding_table,
    masked_mean,
    scanned,
)


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture of a T5/mT5 model. Field names follow the Hugging Face config."""

    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    dense_act_fn: str = "relu"
    is_gated_act: bool = False
    tie_word_embeddings: bool = True  # LM head = shared embedding (no separate lm_head param)
    scale_decoder_outputs: bool = True  # multiply decoder output by d_model**-0.5 before the head
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    model_type: str = "t5"  # "t5" or "mt5": kept so exports round-trip
    dtype: str = "float32"  # compute dtype ("bfloat16" in production)
    param_dtype: str = "float32"
    vocab_chunk_size: int = 16384  # log-likelihood log-sum-exp in vocabulary chunks; 0 = full logits
    scan_layers: bool = False  # one nn.scan over each stack's layers (params `layers`, stacked) instead of `layers_{i}`
    remat: str = "none"  # with scan_layers: what the backward keeps of each layer (layers.REMAT_POLICIES)

    def replace(self, **changes: Any) -> "T5Config":
        return dataclasses.replace(self, **changes)


def relative_position_buckets(
    query_length: int, key_length: int, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> np.ndarray:
    """T5's relative-position bucket for every (query, key) pair: int32 [query_length, key_length].

    Computed on the host with numpy (the lengths are static under jit), in float32 as the
    reference implementation does, so every backend sees the same buckets.
    """
    context = np.arange(query_length, dtype=np.int64)[:, None]
    memory = np.arange(key_length, dtype=np.int64)[None, :]
    relative_position = memory - context
    buckets = np.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).astype(np.int64) * num_buckets
        relative_position = np.abs(relative_position)
    else:
        relative_position = -np.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    with np.errstate(divide="ignore"):
        scaled = (
            np.log(relative_position.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(num_buckets - max_exact)
        )
    large = max_exact + np.where(is_small, 0, scaled).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    buckets += np.where(is_small, relative_position, large)
    return buckets.astype(np.int32)


class RelativePositionBias(nn.Module):
    """Learned per-head bias for each relative-position bucket -> fp32 [1, heads, q, k]."""

    config: T5Config
    bidirectional: bool

    @nn.compact
    def __call__(self, query_length: int, key_length: int) -> jax.Array:
        cfg = self.config
        table = embedding_table(
            self,
            "embedding",
            cfg.relative_attention_num_buckets,
            cfg.num_heads,
            ("relpos_buckets", "heads"),
            std=cfg.d_model**-0.5,
            param_dtype=dtype_of(cfg.param_dtype),
        )
        buckets = relative_position_buckets(
            query_length,
            key_length,
            bidirectional=self.bidirectional,
            num_buckets=cfg.relative_attention_num_buckets,
            max_distance=cfg.relative_attention_max_distance,
        )
        values = jnp.take(table.astype(jnp.float32), jnp.asarray(buckets), axis=0)  # [q, k, heads]
        return jnp.transpose(values, (2, 0, 1))[None]


class T5Attention(nn.Module):
    """T5 attention: no 1/sqrt(d) scaling (T5 folds it into the initialisation)."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, kv: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        heads = (cfg.num_heads, cfg.d_kv)
        proj = functools.partial(dense, heads, ("embed", "heads", "kv"), dtype=dt, param_dtype=pdt)
        query = proj(name="q", init_std=(cfg.d_model * cfg.d_kv) ** -0.5)(x)
        key = proj(name="k", init_std=cfg.d_model**-0.5)(kv)
        value = proj(name="v", init_std=cfg.d_model**-0.5)(kv)
        out = dot_product_attention(
            query,
            key,
            value,
            bias,
            scale=1.0,
            dropout_rate=cfg.dropout_rate,
            deterministic=deterministic,
            module=self,
        )
        return dense(
            cfg.d_model,
            ("heads", "kv", "embed"),
            axis=(-2, -1),
            dtype=dt,
            param_dtype=pdt,
            init_std=(cfg.num_heads * cfg.d_kv) ** -0.5,
            name="o",
        )(out)


class T5MLP(nn.Module):
    """ReLU (T5) or gated-GELU (T5 v1.1 / mT5) feed-forward."""

    config: T5Config

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        act = activation(cfg.dense_act_fn)
        up = functools.partial(dense, cfg.d_ff, ("embed", "mlp"), dtype=dt, param_dtype=pdt, init_std=cfg.d_model**-0.5)
        if cfg.is_gated_act:
            h = act(up(name="wi_0")(x)) * up(name="wi_1")(x)
        else:
            h = act(up(name="wi")(x))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return dense(cfg.d_model, ("mlp", "embed"), dtype=dt, param_dtype=pdt, init_std=cfg.d_ff**-0.5, name="wo")(h)


class T5Block(nn.Module):
    """Pre-norm residual block: self-attention, (cross-attention), feed-forward."""

    config: T5Config
    is_decoder: bool

    @nn.compact
    def __call__(self, x, self_bias, encoded=None, cross_bias=None, deterministic: bool = True):
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        norm = functools.partial(RMSNorm, epsilon=cfg.layer_norm_epsilon, dtype=dt, param_dtype=pdt)
        drop = nn.Dropout(cfg.dropout_rate)
        h = norm(name="self_attention_norm")(x)
        h = T5Attention(cfg, name="self_attention")(h, h, self_bias, deterministic)
        x = x + drop(h, deterministic=deterministic)
        if self.is_decoder:
            h = norm(name="cross_attention_norm")(x)
            h = T5Attention(cfg, name="cross_attention")(h, encoded, cross_bias, deterministic)
            x = x + drop(h, deterministic=deterministic)
        h = norm(name="mlp_norm")(x)
        h = T5MLP(cfg, name="mlp")(h, deterministic)
        x = x + drop(h, deterministic=deterministic)
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class T5Stack(nn.Module):
    """Encoder or decoder stack over already-embedded inputs [batch, length, embed]."""

    config: T5Config
    is_decoder: bool

    @nn.compact
    def __call__(self, x, mask, encoded=None, encoder_mask=None, *, deterministic: bool):
        cfg = self.config
        length = x.shape[1]
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        self_bias = RelativePositionBias(cfg, bidirectional=not self.is_decoder, name="relpos_bias")(length, length)
        self_bias = self_bias + (causal_bias(length) if self.is_decoder else attention_bias_from_mask(mask))
        cross_bias = attention_bias_from_mask(encoder_mask) if self.is_decoder else None
        n_layers = cfg.num_decoder_layers if self.is_decoder else cfg.num_layers
        if cfg.scan_layers:
            layers = scanned(T5Block, n_layers, broadcast_args=4, remat=cfg.remat)(cfg, self.is_decoder, name="layers")
            x, _ = layers(x, self_bias, encoded, cross_bias, deterministic)
        for i in range(0 if cfg.scan_layers else n_layers):
            x = T5Block(cfg, self.is_decoder, name=f"layers_{i}")(
                x, self_bias, encoded, cross_bias, deterministic=deterministic
            )
        x = RMSNorm(cfg.layer_norm_epsilon, dtype_of(cfg.dtype), dtype_of(cfg.param_dtype), name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


def shift_right(target_ids: jax.Array, decoder_start_token_id: int) -> jax.Array:
    """Decoder inputs for teacher forcing: [start, t0, ..., t_{n-2}]."""
    start = jnp.full((target_ids.shape[0], 1), decoder_start_token_id, dtype=target_ids.dtype)
    return jnp.concatenate([start, target_ids[:, :-1]], axis=1)


def vocab_chunk_count(vocab: int, chunk_size: int) -> int | None:
    """How many equal chunks of at most `chunk_size` rows the vocabulary splits into: the
    smallest divisor n of `vocab` with vocab / n <= chunk_size, or None when every such
    divisor makes chunks under half of `chunk_size` (a vocabulary with few small factors)."""
    least = -(-vocab // chunk_size)
    for n in range(least, 2 * least + 1):
        if vocab % n == 0:
            return n
    return None


def chunked_token_log_probs(hidden: jax.Array, table: jax.Array, targets: jax.Array, chunk_size: int) -> jax.Array:
    """log softmax(hidden @ table.T)[..., targets] without materialising [batch, length, vocab].

    hidden [batch, length, embed] (compute dtype), table [vocab, embed], targets [batch, length]
    -> fp32 [batch, length]. The log-sum-exp runs as an online reduction over vocabulary
    chunks of at most `chunk_size` rows, keeping only [batch, length, chunk] live at a time.

    When the vocabulary splits into n equal chunks (mT5's 250112 rows: 16 chunks of 15632),
    chunk i is rows i, i + n, i + 2n, ... (a reshape of the table, read in place): a
    table sharded over its vocabulary dim (`fsdp_tp`) then gives every device its own share of
    every chunk, so each device computes 1/model of the logits. Contiguous chunks would sit on
    one device each, and XLA gathers the whole table to every device instead. Otherwise the
    chunks are contiguous dynamic slices plus a remainder.
    """
    vocab = table.shape[0]
    w = table.astype(hidden.dtype)
    target_logits = jnp.einsum("btd,btd->bt", hidden, jnp.take(w, targets, axis=0), preferred_element_type=jnp.float32)

    def chunk_logits(rows: jax.Array) -> jax.Array:
        return jnp.einsum("btd,vd->btv", hidden, rows, preferred_element_type=jnp.float32)

    def merge(m, s, logits):
        m_new = jnp.maximum(m, jnp.max(logits, axis=-1))
        s_new = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[..., None]), axis=-1)
        return m_new, s_new

    def scan(rows_of, count, m, s):
        def step(carry, i):
            return merge(*carry, chunk_logits(rows_of(i))), None

        (m, s), _ = jax.lax.scan(step, (m, s), jnp.arange(count))
        return m, s

    m = jnp.full(targets.shape, -jnp.inf, jnp.float32)
    s = jnp.zeros(targets.shape, jnp.float32)
    n = vocab_chunk_count(vocab, chunk_size)
    if n is not None:
        strided = w.reshape(vocab // n, n, w.shape[-1])
        m, s = scan(lambda i: jax.lax.dynamic_index_in_dim(strided, i, axis=1, keepdims=False), n, m, s)
        return target_logits - (m + jnp.log(s))
    n_full = vocab // chunk_size
    if n_full:
        m, s = scan(lambda i: jax.lax.dynamic_slice_in_dim(w, i * chunk_size, chunk_size, axis=0), n_full, m, s)
    if vocab % chunk_size:
        m, s = merge(m, s, chunk_logits(w[n_full * chunk_size :]))
    return target_logits - (m + jnp.log(s))


def gather_shared_sources(encoded: jax.Array, mask: jax.Array, source_index: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encoder states [sources, src_len, embed] and mask [sources, src_len] -> one per target
    row [rows, ...], where row r of block b takes source `source_index[b, r]` of block b
    (`blocks = source_index.shape[0]` equal blocks of sources and of rows)."""
    blocks = source_index.shape[0]
    take = jax.vmap(lambda block, index: jnp.take(block, index, axis=0))
    states = take(encoded.reshape(blocks, -1, *encoded.shape[1:]), source_index)
    masks = take(mask.reshape(blocks, -1, mask.shape[-1]), source_index)
    states = nn.with_logical_constraint(states.reshape(-1, *encoded.shape[1:]), ("batch", "length", "embed"))
    return states, masks.reshape(-1, mask.shape[-1])


class T5EncoderDecoder(nn.Module):
    """T5/mT5 encoder-decoder. `token_log_probs` is what the stage-1 scorer uses."""

    config: T5Config

    def setup(self):
        cfg = self.config
        pdt = dtype_of(cfg.param_dtype)
        self.shared = SharedEmbedding(cfg)
        self.encoder = T5Stack(cfg, is_decoder=False)
        self.decoder = T5Stack(cfg, is_decoder=True)
        if not cfg.tie_word_embeddings:
            self.lm_head = self.param(
                "lm_head",
                nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
                (cfg.vocab_size, cfg.d_model),
                pdt,
            )

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array, deterministic: bool = True) -> jax.Array:
        """input_ids, attention_mask [batch, src_len] -> encoder states [batch, src_len, embed]."""
        return self.encoder(self.shared(input_ids), attention_mask, deterministic=deterministic)

    def decode(self, encoded, encoder_mask, decoder_input_ids, deterministic: bool = True) -> jax.Array:
        """Decoder states [batch, tgt_len, embed], already scaled for the LM head when the model says so."""
        cfg = self.config
        x = self.decoder(
            self.shared(decoder_input_ids),
            None,
            encoded,
            encoder_mask,
            deterministic=deterministic,
        )
        if cfg.scale_decoder_outputs:
            x = x * (cfg.d_model**-0.5)
        return x

    def _head_table(self) -> jax.Array:
        return self.shared.embedding if self.config.tie_word_embeddings else self.lm_head

    def __call__(self, input_ids, attention_mask, decoder_input_ids, deterministic: bool = True) -> jax.Array:
        """Full LM logits, fp32 [batch, tgt_len, vocab] (for tests and small vocabularies)."""
        hidden = self.decode(self.encode(input_ids, attention_mask, deterministic), attention_mask, decoder_input_ids, deterministic)
        return jnp.einsum("btd,vd->btv", hidden, self._head_table().astype(hidden.dtype), preferred_element_type=jnp.float32)

    def token_log_probs(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        target_ids: jax.Array,
        target_mask: jax.Array,
        deterministic: bool = True,
        source_index: jax.Array | None = None,
    ) -> jax.Array:
        """log p(target_t | source, target_<t) for every target token: fp32 [batch, tgt_len].

        input_ids/attention_mask [batch, src_len]; target_ids/target_mask [batch, tgt_len]
        (targets end with EOS; padding positions get 0). Uses the chunked log-sum-exp unless
        `vocab_chunk_size` is 0.

        With `source_index` [blocks, batch / blocks] the sources are encoded once each and
        shared: input_ids/attention_mask then hold [sources, src_len], split into `blocks` equal
        blocks (one per batch device), and target row r of block b reads source
        `source_index[b, r]` of block b, so the gather never leaves a device.
        """
        cfg = self.config
        decoder_input_ids = shift_right(target_ids, cfg.decoder_start_token_id)
        encoded = self.encode(input_ids, attention_mask, deterministic)
        if source_index is not None:
            encoded, attention_mask = gather_shared_sources(encoded, attention_mask, source_index)
        hidden = self.decode(encoded, attention_mask, decoder_input_ids, deterministic)
        table = self._head_table()
        if cfg.vocab_chunk_size and cfg.vocab_chunk_size < cfg.vocab_size:
            logp = chunked_token_log_probs(hidden, table, target_ids, cfg.vocab_chunk_size)
        else:
            logits = jnp.einsum("btd,vd->btv", hidden, table.astype(hidden.dtype), preferred_element_type=jnp.float32)
            logp = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), target_ids[..., None], axis=-1)[..., 0]
        return jnp.where(target_mask > 0, logp, 0.0)


class SharedEmbedding(nn.Module):
    """The token embedding shared by encoder, decoder and (tied) LM head: [vocab, embed]."""

    config: T5Config

    def setup(self):
        cfg = self.config
        self.embedding = embedding_table(
            self, "embedding", cfg.vocab_size, cfg.d_model, ("vocab", "embed"), std=1.0, param_dtype=dtype_of(cfg.param_dtype)
        )

    def __call__(self, ids: jax.Array) -> jax.Array:
        out = jnp.take(self.embedding, ids, axis=0).astype(dtype_of(self.config.dtype))
        return nn.with_logical_constraint(out, ("batch", "length", "embed"))


def sequence_scores(token_log_probs: jax.Array, target_mask: jax.Array, reduction: str = "mean") -> jax.Array:
    """Reduce per-token log-probs [batch, tgt_len] to one score per sequence [batch].

    `mean` (UMR's default) averages over the real target tokens (prefix and EOS included);
    `sum` is UPR's total log-likelihood.
    """
    total = jnp.sum(jnp.where(target_mask > 0, token_log_probs, 0.0), axis=-1)
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / jnp.maximum(jnp.sum(target_mask > 0, axis=-1), 1)
    raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")


class T5EncoderTower(nn.Module):
    """The T5/mT5 encoder as a retriever tower: mean pooling over non-padding tokens -> fp32 [batch, embed]."""

    config: T5Config
    pooling: str = "mean"

    def setup(self):
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        self.shared = SharedEmbedding(self.config)
        self.encoder = T5Stack(self.config, is_decoder=False)

    def hidden_states(self, input_ids, attention_mask, deterministic: bool = True) -> jax.Array:
        return self.encoder(self.shared(input_ids), attention_mask, deterministic=deterministic)

    def __call__(self, input_ids, attention_mask, deterministic: bool = True) -> jax.Array:
        hidden = self.hidden_states(input_ids, attention_mask, deterministic)
        if self.pooling == "cls":
            return hidden[:, 0].astype(jnp.float32)
        return masked_mean(hidden, attention_mask)
