"""The architectures of the public checkpoints this stack uses, as their `config.json` says, so
a program can be built (and compiled for a TPU, `umr-jax compile`) without the weights.

    architecture("/models/mt5-xl-lm-adapt")   # the folder's config.json if it is there,
                                              # else the preset its name matches ("mt5-xl-lm-adapt")
    architecture("google/mt5-xl")              # a Hugging Face model ID: the preset of that name
    architecture("intfloat/e5-small")          # no preset: the ID's config.json (HF cache or Hub)

Only sizes that decide the program are kept (they equal the checkpoints' config.json values);
the weights never matter here. LM-adapted mT5 checkpoints have mT5's architecture.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from umr_jax.errors import InputError, ModelLoadError
from umr_jax.models.locate import is_model_id, parse_model_id, resolve_model_dir


def _mt5(d_model: int, d_ff: int, heads: int, layers: int) -> dict[str, Any]:
    return {"model_type": "mt5", "vocab_size": 250112, "d_model": d_model, "d_kv": 64, "d_ff": d_ff, "num_heads": heads,
            "num_layers": layers, "num_decoder_layers": layers, "feed_forward_proj": "gated-gelu",
            "tie_word_embeddings": False, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
            "layer_norm_epsilon": 1e-6, "dropout_rate": 0.1, "pad_token_id": 0, "eos_token_id": 1,
            "decoder_start_token_id": 0}


def _bert(vocab: int, **extra: Any) -> dict[str, Any]:
    return {"model_type": "bert", "vocab_size": vocab, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12, "pad_token_id": 0, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
            **extra}


def _xlmr(hidden: int, layers: int, heads: int, intermediate: int) -> dict[str, Any]:
    return {"model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "intermediate_size": intermediate, "hidden_act": "gelu",
            "max_position_embeddings": 514, "type_vocab_size": 1, "layer_norm_eps": 1e-5, "pad_token_id": 1,
            "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}


_MT5 = {"small": _mt5(512, 1024, 6, 8), "base": _mt5(768, 2048, 12, 12), "large": _mt5(1024, 2816, 16, 24),
        "xl": _mt5(2048, 5120, 32, 24), "xxl": _mt5(4096, 10240, 64, 24)}
_XLMR_BASE, _XLMR_LARGE = _xlmr(768, 12, 12, 3072), _xlmr(1024, 24, 16, 4096)

PRESETS: dict[str, dict[str, Any]] = {
    **{f"mt5-{size}": cfg for size, cfg in _MT5.items()},
    **{f"mt5-{size}-lm-adapt": cfg for size, cfg in _MT5.items()},
    # mBERT-cased: mContriever and mDPR start from it.
    "bert-base-multilingual-cased": _bert(119547),
    "mcontriever": _bert(119547),
    "mcontriever-msmarco": _bert(119547),
    "xlm-roberta-base": _XLMR_BASE,
    "xlm-roberta-large": _XLMR_LARGE,
    "multilingual-e5-base": _XLMR_BASE,
    "multilingual-e5-large": _XLMR_LARGE,
}


def preset_name(ref: str | os.PathLike) -> str | None:
    """The preset a folder path or model ID (`google/mt5-xl`, `google/mt5-xl@main`) names: its
    last path component, if that is a preset."""
    model_id = parse_model_id(ref)
    text = model_id[0] if model_id is not None else str(ref)
    name = Path(text.rstrip("/")).name.lower()
    return name if name in PRESETS else None


def architecture(ref: str | os.PathLike) -> tuple[dict[str, Any], str]:
    """(config.json dict, where it came from) for a model folder, a preset name or a model ID.

    In order: the folder's config.json; the preset the name matches (no network: the presets
    are the public checkpoints' values); a model ID's config.json (only that file, from the HF
    cache or the Hub)."""
    from umr_jax.models.hf_io import read_hf_config

    if ref and (Path(ref) / "config.json").is_file():
        return read_hf_config(ref), f"{ref}/config.json"
    name = preset_name(ref)
    if name is not None:
        return dict(PRESETS[name]), f"preset {name}"
    why = "no config.json there and no known architecture of that name"
    if ref and is_model_id(ref):
        try:
            folder = resolve_model_dir(ref, config_only=True)
        except InputError as err:
            why = f"no known architecture of that name, and {err.message}"
        else:
            return read_hf_config(folder), f"{ref} ({folder}/config.json)"
    raise ModelLoadError(f"{ref or '(empty)'}: {why}; give a model folder, a model ID or one of: {', '.join(sorted(PRESETS))}")
