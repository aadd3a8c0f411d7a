"""Hugging Face model folders <-> Flax params: the public entry points (load a folder, export one).

A model folder holds `config.json`, the weights (`model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin[.index.json]` read through torch with
`weights_only=True`) and tokenizer files. Real checkpoints (mT5-XL LM-adapted, mContriever,
multilingual-E5, XLM-R, mDPR) load directly; trained towers export back to folders that
transformers' PyTorch classes (and sentence-transformers) load.

Loading is strict: every tensor of the model must be present with the right shape, and every
tensor in the checkpoint must be used, except a documented set of known extras (MLM/LM heads,
tied embedding copies, buffers) that are listed in `LoadedModel.ignored`. Anything else raises
`ModelLoadError` naming the tensors.

This module and the three beside it are the only ones that know the HF layout:
`hf_checkpoint` reads checkpoint tensors, `hf_config` reads and converts config.json, and
`hf_mapping` maps tensor names and layouts to our param trees. Callers use `hf_io`, which
re-exports the names they need from those (e.g. `hf_io.read_hf_config`, `hf_io.abstract_params`).

Every loader here takes a folder or a Hugging Face model ID (`facebook/mcontriever`,
`google/mt5-xl@main`): `locate.resolve_model_dir` turns an ID into its snapshot folder in the
HF cache, fetching it when the Hub can be reached.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from umr_jax import storage
from umr_jax.data.files import make_output_temp_dir, output_file_mode
from umr_jax.errors import ModelLoadError
from umr_jax.models.bert import BertConfig, BertEncoderTower
from umr_jax.models.hf_checkpoint import CheckpointTensors
from umr_jax.models.hf_config import (
    BERT_TYPES,
    SUPPORTED,
    T5_TYPES,
    bert_config_from_hf,
    bert_config_to_hf,
    check_config_sizes,
    model_type_of,
    read_hf_config,
    t5_config_from_hf,
    t5_config_to_hf,
)
from umr_jax.models.hf_mapping import (
    T5_ENCODER_ONLY_IGNORABLE,
    T5_IGNORABLE,
    Entry,
    RenamedTensors,
    abstract_params,
    assemble_params,
    bert_ignorable,
    bert_mapping,
    bert_prefix,
    flatten_tree,
    hf_state_dict,
    t5_mapping,
)
from umr_jax.models.layers import stack_layers, unstack_layers
from umr_jax.models.locate import resolve_model_dir
from umr_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderTower

__all__ = [
    # this module
    "LoadedModel", "load_t5", "load_bert", "load_model", "load_tokenizer", "export_model", "count_params",
    "pooling_from_folder", "normalize_from_folder", "resolve_model_dir",
    # re-exported for callers
    "ModelLoadError", "CheckpointTensors",
    "T5_TYPES", "BERT_TYPES", "SUPPORTED", "read_hf_config", "check_config_sizes", "model_type_of",
    "t5_config_from_hf", "t5_config_to_hf", "bert_config_from_hf", "bert_config_to_hf",
    "Entry", "t5_mapping", "bert_mapping", "T5_IGNORABLE", "T5_ENCODER_ONLY_IGNORABLE", "bert_ignorable",
    "abstract_params", "assemble_params", "hf_state_dict", "flatten_tree",
]


@dataclasses.dataclass
class LoadedModel:
    """A model read from a HF folder: our module, its config and a numpy param tree (host memory)."""

    family: str  # "t5" (encoder-decoder), "t5-encoder" (tower) or "bert" (tower; BERT/XLM-R)
    config: T5Config | BertConfig
    module: Any
    params: dict
    ignored: list[str]
    folder: Path


def _example_inputs() -> tuple:
    ids = np.ones((1, 4), np.int32)
    return ids, ids


def load_t5(folder: str | os.PathLike, *, encoder_only: bool = False, pooling: str = "mean", **overrides: Any) -> LoadedModel:
    """Load a T5/mT5 folder as the encoder-decoder scorer, or (`encoder_only`) as an encoder tower.

    `overrides` replace T5Config fields (e.g. dtype="bfloat16", dropout_rate=0.0).
    """
    folder = resolve_model_dir(folder)
    hf = read_hf_config(folder)
    if model_type_of(hf, folder) not in T5_TYPES:
        raise ModelLoadError(f"{folder}: model_type={hf['model_type']!r} is not a T5/mT5 model")
    source = CheckpointTensors(folder)
    check_config_sizes(hf, folder)
    untied = "lm_head.weight" in source.names and not encoder_only
    if untied and "shared.weight" in source.names:
        untied = not np.array_equal(source.get("lm_head.weight"), source.get("shared.weight"))
    cfg = t5_config_from_hf(hf, untied_head=untied, **overrides)
    ignorable = list(T5_IGNORABLE)
    if not untied:
        ignorable.append(r"lm_head\.weight")  # identical to shared.weight
    unrolled = cfg.replace(scan_layers=False)  # checkpoints hold unrolled layers
    if encoder_only:
        module = T5EncoderTower(cfg, pooling=pooling)
        ignorable += T5_ENCODER_ONLY_IGNORABLE
        expected = abstract_params(T5EncoderTower(unrolled, pooling=pooling), *_example_inputs())
    else:
        module = T5EncoderDecoder(cfg)
        ids, mask = _example_inputs()
        expected = abstract_params(T5EncoderDecoder(unrolled), ids, mask, ids)
    params, ignored = assemble_params(
        t5_mapping(cfg, encoder_only=encoder_only), source, expected, ignorable, folder, np.dtype(cfg.param_dtype)
    )
    if cfg.scan_layers:
        params = stack_layers(params)
    return LoadedModel("t5-encoder" if encoder_only else "t5", cfg, module, params, ignored, Path(folder))


def pooling_from_folder(folder: str | os.PathLike) -> str | None:
    """The pooling a sentence-transformers folder declares (1_Pooling/config.json), if any."""
    path = resolve_model_dir(folder) / "1_Pooling" / "config.json"
    if not path.is_file():
        return None
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: not a sentence-transformers pooling config ({err})") from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{path}: expected a JSON object (a sentence-transformers pooling config)")
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    return None


def normalize_from_folder(folder: str | os.PathLike) -> bool:
    """Whether a sentence-transformers folder ends with a Normalize module (unit-length
    embeddings, so dot products are cosine similarities), as its modules.json lists."""
    path = resolve_model_dir(folder) / "modules.json"
    if not path.is_file():
        return False
    try:
        modules = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelLoadError(f"{path}: not a sentence-transformers modules.json ({err})") from None
    return any(isinstance(m, dict) and str(m.get("type", "")).endswith("models.Normalize") for m in modules)


def load_bert(folder: str | os.PathLike, *, pooling: str | None = None, **overrides: Any) -> LoadedModel:
    """Load a BERT / XLM-R / RoBERTa folder as an encoder tower.

    Pooling: the argument, else what a sentence-transformers `1_Pooling/config.json` says,
    else mean pooling (mContriever, multilingual-E5). Use "cls" for mDPR.
    """
    folder = resolve_model_dir(folder)
    hf = read_hf_config(folder)
    if model_type_of(hf, folder) not in BERT_TYPES:
        raise ModelLoadError(f"{folder}: model_type={hf['model_type']!r} is not a BERT-family model")
    source = RenamedTensors(CheckpointTensors(folder))
    check_config_sizes(hf, folder)
    prefix = bert_prefix(source.names, folder)
    has_pooler = f"{prefix}pooler.dense.weight" in source.names
    pooling = pooling or pooling_from_folder(folder) or "mean"
    cfg = bert_config_from_hf(hf, pooling=pooling, has_pooler=has_pooler, **overrides)
    module = BertEncoderTower(cfg)
    expected = abstract_params(BertEncoderTower(cfg.replace(scan_layers=False)), *_example_inputs())
    ignorable = bert_ignorable(prefix)
    params, ignored = assemble_params(bert_mapping(cfg, prefix), source, expected, ignorable, folder, np.dtype(cfg.param_dtype))
    if cfg.scan_layers:
        params = stack_layers(params)
    return LoadedModel("bert", cfg, module, params, ignored, Path(folder))


def load_model(folder: str | os.PathLike, *, as_tower: bool | None = None, pooling: str | None = None, **overrides: Any) -> LoadedModel:
    """Load any supported HF folder. T5/mT5 load as the encoder-decoder scorer unless `as_tower`;
    BERT-family folders always load as towers."""
    folder = resolve_model_dir(folder)
    model_type = model_type_of(read_hf_config(folder), folder)
    if model_type in T5_TYPES:
        return load_t5(folder, encoder_only=bool(as_tower), pooling=pooling or "mean", **overrides)
    if as_tower is False:
        raise ModelLoadError(f"{folder}: a {model_type} model can only be loaded as an encoder tower")
    return load_bert(folder, pooling=pooling, **overrides)


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved in a HF model folder (transformers.AutoTokenizer, offline; a model
    ID's from its snapshot folder)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(resolve_model_dir(folder)), local_files_only=True)


def _sentence_transformers_files(folder: Path, pooling: str, dim: int, max_seq_length: int, normalize: bool = False) -> None:
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": dim,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:  # as sentence-transformers saves it: an empty folder and a modules.json entry
        (folder / "2_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))


def export_model(
    folder: str | os.PathLike,
    config: T5Config | BertConfig,
    params: dict,
    *,
    family: str,
    tokenizer: Any = None,
    max_seq_length: int = 512,
    normalize: bool = False,
) -> Path:
    """Write a HF model folder (model.safetensors, config.json, tokenizer, sentence-transformers
    pooling files for towers) that transformers' PyTorch classes load. Atomic: written to a temp
    folder beside `folder`, then renamed into place, with the modes that mkdir() and open() give
    under the umask (not mkdtemp's private 0o700).

    family: "t5" (encoder-decoder), "t5-encoder" or "bert".
    normalize: towers trained with cosine similarity: modules.json ends with a Normalize module,
      and `TowerEncoder` (like sentence-transformers) then returns unit-length embeddings.
    """
    from safetensors.numpy import save_file

    folder = storage.local(folder)  # a gs:// folder: written in its mirror, uploaded once whole
    if family == "bert":
        entries = bert_mapping(config, "")
        hf_config = bert_config_to_hf(config)
        pooling, dim = config.pooling, config.hidden_size
    elif family in ("t5", "t5-encoder"):
        encoder_only = family == "t5-encoder"
        entries = t5_mapping(config, encoder_only=encoder_only)
        hf_config = t5_config_to_hf(config, encoder_only=encoder_only)
        pooling, dim = "mean", config.d_model
    else:
        raise ValueError(f"family must be 't5', 't5-encoder' or 'bert', got {family!r}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_output_temp_dir(folder.parent, prefix=f".{folder.name}.", suffix=".tmp")  # swept by the stage folder if a kill leaves it
    try:
        if getattr(config, "scan_layers", False):
            params = unstack_layers(params)
        save_file(hf_state_dict(entries, params), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", output_file_mode())  # safetensors writes it 0o600
        (tmp / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True))
        if family != "t5":
            _sentence_transformers_files(tmp, pooling if family == "bert" else "mean", dim, max_seq_length, normalize)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if folder.exists():
            shutil.rmtree(folder)
            storage.unpublish(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    storage.publish(folder)
    return folder


def count_params(params: dict) -> int:
    return int(sum(np.prod(np.shape(v)) for v in flatten_tree(params).values()))
