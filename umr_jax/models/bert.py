"""BERT / XLM-RoBERTa encoder towers in Flax Linen.

One module serves mBERT (mContriever: mean pooling), XLM-R (multilingual-E5: mean pooling)
and mDPR (CLS pooling). The two families differ only in position ids: BERT counts from 0,
RoBERTa/XLM-R counts non-padding tokens from `pad_token_id + 1`.

Parameter tree (`hf_io` maps it to Hugging Face names):
  embeddings/{word_embeddings, position_embeddings, token_type_embeddings, norm}
  layers_{i}/{attention/{query,key,value,output}, attention_norm, intermediate, output, output_norm}
  (with `scan_layers`: one `layers/...` whose leaves have a leading [num_layers] axis)
  pooler/dense   (only when the checkpoint has one; kept so exports round-trip)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from umr_jax.models.layers import (
    LayerNorm,
    activation,
    attention_bias_from_mask,
    dense,
    dot_product_attention,
    dtype_of,
    embedding_table,
    masked_mean,
    scanned,
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture of a BERT-family encoder. Field names follow the Hugging Face config."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    model_type: str = "bert"  # "bert" (positions from 0) or "xlm-roberta"/"roberta" (from pad+1)
    pooling: str = "mean"  # "mean" (mContriever, E5), "cls" (mDPR) or "pooler" (tanh(dense(CLS)))
    has_pooler: bool = False
    dtype: str = "float32"
    param_dtype: str = "float32"
    scan_layers: bool = False  # one nn.scan over the layers (params `layers`, stacked) instead of `layers_{i}`
    remat: str = "none"  # with scan_layers: what the backward keeps of each layer (layers.REMAT_POLICIES)

    def replace(self, **changes: Any) -> "BertConfig":
        return dataclasses.replace(self, **changes)

    @property
    def roberta_positions(self) -> bool:
        return self.model_type in ("xlm-roberta", "roberta", "camembert")


def position_ids_for(input_ids: jax.Array, config: BertConfig) -> jax.Array:
    """[batch, length] position ids: 0..L-1 for BERT; for RoBERTa, cumsum of non-pad tokens offset by pad id."""
    if config.roberta_positions:
        mask = (input_ids != config.pad_token_id).astype(jnp.int32)
        return jnp.cumsum(mask, axis=1) * mask + config.pad_token_id
    return jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)


class BertEmbeddings(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg = self.config
        pdt = dtype_of(cfg.param_dtype)
        table = functools.partial(embedding_table, self, std=0.02, param_dtype=pdt)
        words = table("word_embeddings", cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"))
        positions = table("position_embeddings", cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"))
        types = table("token_type_embeddings", cfg.type_vocab_size, cfg.hidden_size, (None, "embed"))
        x = (
            jnp.take(words, input_ids, axis=0)
            + jnp.take(positions, position_ids_for(input_ids, cfg), axis=0)
            + jnp.take(types, token_type_ids, axis=0)
        )
        x = LayerNorm(cfg.layer_norm_eps, dtype_of(cfg.dtype), pdt, name="norm")(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertSelfAttention(nn.Module):
    config: BertConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        proj = functools.partial(
            dense,
            (cfg.num_attention_heads, head_dim),
            ("embed", "heads", "kv"),
            use_bias=True,
            bias_axes=("heads", "kv"),
            dtype=dt,
            param_dtype=pdt,
        )
        out = dot_product_attention(
            proj(name="query")(x),
            proj(name="key")(x),
            proj(name="value")(x),
            bias,
            scale=head_dim**-0.5,
            dropout_rate=cfg.attention_probs_dropout_prob,
            deterministic=deterministic,
            module=self,
        )
        return dense(
            cfg.hidden_size,
            ("heads", "kv", "embed"),
            axis=(-2, -1),
            use_bias=True,
            bias_axes=("embed",),
            dtype=dt,
            param_dtype=pdt,
            name="output",
        )(out)


class BertLayer(nn.Module):
    """Post-norm transformer layer."""

    config: BertConfig

    @nn.compact
    def __call__(self, x, bias, deterministic: bool):
        cfg = self.config
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        drop = nn.Dropout(cfg.hidden_dropout_prob)
        h = BertSelfAttention(cfg, name="attention")(x, bias, deterministic)
        x = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="attention_norm")(x + drop(h, deterministic=deterministic))
        h = dense(cfg.intermediate_size, ("embed", "mlp"), use_bias=True, dtype=dt, param_dtype=pdt, name="intermediate")(x)
        h = activation(cfg.hidden_act)(h)
        h = dense(cfg.hidden_size, ("mlp", "embed"), use_bias=True, dtype=dt, param_dtype=pdt, name="output")(h)
        x = LayerNorm(cfg.layer_norm_eps, dt, pdt, name="output_norm")(x + drop(h, deterministic=deterministic))
        return nn.with_logical_constraint(x, ("batch", "length", "embed"))


class BertEncoderTower(nn.Module):
    """BERT/XLM-R encoder as a retriever tower.

    `__call__(input_ids, attention_mask) -> fp32 [batch, hidden]` pooled per `config.pooling`;
    `hidden_states(...) -> [batch, length, hidden]`.
    """

    config: BertConfig

    def setup(self):
        cfg = self.config
        if cfg.pooling not in ("mean", "cls", "pooler"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'pooler', got {cfg.pooling!r}")
        if cfg.pooling == "pooler" and not cfg.has_pooler:
            raise ValueError("pooling='pooler' needs a model with a pooler (has_pooler=True)")
        self.embeddings = BertEmbeddings(cfg)
        if cfg.scan_layers:  # params `layers`, leaves [num_layers, ...]
            self.layers = scanned(BertLayer, cfg.num_hidden_layers, broadcast_args=2, remat=cfg.remat)(cfg)
        else:
            self.layers = [BertLayer(cfg) for _ in range(cfg.num_hidden_layers)]  # named layers_{i}
        if cfg.has_pooler:
            self.pooler = dense(
                cfg.hidden_size,
                ("embed", "embed_out"),
                use_bias=True,
                dtype=dtype_of(cfg.dtype),
                param_dtype=dtype_of(cfg.param_dtype),
            )

    def hidden_states(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True) -> jax.Array:
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids, deterministic)
        bias = attention_bias_from_mask(attention_mask)
        if self.config.scan_layers:
            return self.layers(x, bias, deterministic)[0]
        for layer in self.layers:
            x = layer(x, bias, deterministic)
        return x

    def __call__(self, input_ids, attention_mask, token_type_ids=None, deterministic: bool = True) -> jax.Array:
        cfg = self.config
        hidden = self.hidden_states(input_ids, attention_mask, token_type_ids, deterministic)
        if cfg.has_pooler and (cfg.pooling == "pooler" or self.is_initializing()):
            pooled = jnp.tanh(self.pooler(hidden[:, 0])).astype(jnp.float32)
            if cfg.pooling == "pooler":
                return pooled
        if cfg.pooling == "cls":
            return hidden[:, 0].astype(jnp.float32)
        return masked_mean(hidden, attention_mask)
