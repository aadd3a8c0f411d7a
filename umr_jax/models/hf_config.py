"""Hugging Face `config.json` <-> our model configs: reading and checking a folder's config
(sizes that must be integers, the supported `model_type`s) and converting T5/mT5 and BERT-family
configs both ways, following HF's own derivations. Part of `hf_io`, the only place that knows the
HF layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from umr_jax.errors import ModelLoadError
from umr_jax.models.bert import BertConfig
from umr_jax.models.t5 import T5Config

T5_TYPES = ("t5", "mt5")
BERT_TYPES = ("bert", "xlm-roberta", "roberta")
SUPPORTED = T5_TYPES + BERT_TYPES


def read_hf_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no config.json; a Hugging Face model folder is expected")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: invalid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path}: expected a JSON object of settings, got {type(config).__name__}")
    return config


# Sizes a config.json must give as integers: key -> (least value, default when absent or None;
# no default: required). Nonsense sizes (hidden_size=-64) fail here, naming the key, instead of
# deep inside the model.
_BERT_SIZES = {"vocab_size": (1, None), "hidden_size": (1, None), "num_hidden_layers": (1, None),
               "num_attention_heads": (1, None), "intermediate_size": (1, None),
               "max_position_embeddings": (1, 512), "type_vocab_size": (1, 2)}
_T5_SIZES = {"vocab_size": (1, None), "d_model": (1, None), "d_kv": (1, None), "d_ff": (1, None), "num_heads": (1, None),
             "num_layers": (1, 6), "num_decoder_layers": (0, 0), "relative_attention_num_buckets": (1, 32),
             "relative_attention_max_distance": (1, 128)}


def check_config_sizes(hf_config: dict[str, Any], folder: Any) -> None:
    """Raise `ModelLoadError` naming config.json and the key when a size is missing, not an
    integer, too small, or (BERT family) the heads do not divide the hidden size."""
    path = Path(folder) / "config.json"
    is_t5 = hf_config.get("model_type") in T5_TYPES
    for key, (least, default) in (_T5_SIZES if is_t5 else _BERT_SIZES).items():
        value = hf_config.get(key)
        if value is None:
            if default is None:
                raise ModelLoadError(f"{path}: no {key!r}; expected it, an integer >= {least}")
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ModelLoadError(f"{path}: {key}={value!r}; expected an integer >= {least}")
    if not is_t5 and hf_config["hidden_size"] % hf_config["num_attention_heads"]:
        raise ModelLoadError(f"{path}: hidden_size={hf_config['hidden_size']} is not divisible by "
                             f"num_attention_heads={hf_config['num_attention_heads']}; expected heads that divide the hidden size")


def model_type_of(hf_config: dict[str, Any], folder: Any = "") -> str:
    model_type = hf_config.get("model_type")
    if model_type not in SUPPORTED:
        raise ModelLoadError(
            f"{folder}: unknown architecture model_type={model_type!r} "
            f"(architectures={hf_config.get('architectures')}); supported: {', '.join(SUPPORTED)}"
        )
    return model_type


# ---------------------------------------------------------------------------------------------
# Configs


def t5_config_from_hf(hf: dict[str, Any], *, untied_head: bool, **overrides: Any) -> T5Config:
    """Our T5Config from a HF T5/mT5 config.json dict, following HF's own derivations."""
    ff = hf.get("feed_forward_proj", "relu")
    parts = ff.split("-")
    act = "gelu_new" if ff == "gated-gelu" else parts[-1]
    if "scale_decoder_outputs" in hf:
        scale = bool(hf["scale_decoder_outputs"])
    elif hf.get("model_type") == "mt5":
        scale = False  # HF's MT5 never scales decoder outputs
    else:
        scale = hf.get("tie_word_embeddings", True) is not False
    num_layers = hf.get("num_layers", 6)
    cfg = T5Config(
        vocab_size=hf["vocab_size"],
        d_model=hf["d_model"],
        d_kv=hf["d_kv"],
        d_ff=hf["d_ff"],
        num_layers=num_layers,
        num_decoder_layers=hf.get("num_decoder_layers") or num_layers,
        num_heads=hf["num_heads"],
        relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout_rate=hf.get("dropout_rate", 0.1),
        layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
        dense_act_fn=act,
        is_gated_act=parts[0] == "gated",
        tie_word_embeddings=not untied_head,
        scale_decoder_outputs=scale,
        pad_token_id=hf.get("pad_token_id", 0) or 0,
        eos_token_id=hf.get("eos_token_id", 1) if isinstance(hf.get("eos_token_id", 1), int) else hf["eos_token_id"][0],
        decoder_start_token_id=hf.get("decoder_start_token_id", 0) or 0,
        model_type=hf.get("model_type", "t5"),
    )
    return cfg.replace(**overrides)


def t5_config_to_hf(cfg: T5Config, *, encoder_only: bool) -> dict[str, Any]:
    model_type = cfg.model_type
    if model_type == "mt5" and cfg.scale_decoder_outputs and not encoder_only:
        model_type = "t5"  # HF's MT5 classes cannot scale decoder outputs; T5's can
    prefix = "MT5" if model_type == "mt5" else "T5"
    act = cfg.dense_act_fn
    if cfg.is_gated_act:
        ff = "gated-gelu" if act == "gelu_new" else f"gated-{act}"
    else:
        ff = act
    out = {
        "architectures": [f"{prefix}EncoderModel" if encoder_only else f"{prefix}ForConditionalGeneration"],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.d_model,
        "d_kv": cfg.d_kv,
        "d_ff": cfg.d_ff,
        "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.num_decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_epsilon,
        "feed_forward_proj": ff,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "scale_decoder_outputs": cfg.scale_decoder_outputs,
        "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id,
        "decoder_start_token_id": cfg.decoder_start_token_id,
        "is_encoder_decoder": not encoder_only,
    }
    return out


def bert_config_from_hf(hf: dict[str, Any], *, pooling: str, has_pooler: bool, **overrides: Any) -> BertConfig:
    pos = hf.get("position_embedding_type", "absolute")
    if pos != "absolute":
        raise ModelLoadError(f"position_embedding_type={pos!r} is not supported (only 'absolute')")
    cfg = BertConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_hidden_layers=hf["num_hidden_layers"],
        num_attention_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf.get("hidden_act", "gelu"),
        hidden_dropout_prob=hf.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=hf.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        pad_token_id=hf.get("pad_token_id", 0) or 0,
        model_type=hf["model_type"],
        pooling=pooling,
        has_pooler=has_pooler,
    )
    return cfg.replace(**overrides)


def bert_config_to_hf(cfg: BertConfig) -> dict[str, Any]:
    arch = {"bert": "BertModel", "xlm-roberta": "XLMRobertaModel", "roberta": "RobertaModel"}[cfg.model_type]
    return {
        "architectures": [arch],
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "hidden_dropout_prob": cfg.hidden_dropout_prob,
        "attention_probs_dropout_prob": cfg.attention_probs_dropout_prob,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "position_embedding_type": "absolute",
    }
