"""Hugging Face model folders <-> Flax params. The only module that knows the HF layout.

A model folder holds `config.json`, the weights (`model.safetensors`, a sharded
`model.safetensors.index.json`, or `pytorch_model.bin[.index.json]` read through torch with
`weights_only=True`) and tokenizer files. Real checkpoints (mT5-XL LM-adapted, mContriever,
multilingual-E5, XLM-R, mDPR) load directly; trained towers export back to folders that
transformers' PyTorch classes (and sentence-transformers) load.

Loading is strict: every tensor of the model must be present with the right shape, and every
tensor in the checkpoint must be used, except a documented set of known extras (MLM/LM heads,
tied embedding copies, buffers) that are listed in `LoadedModel.ignored`. Anything else raises
`ModelLoadError` naming the tensors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from umr_jax.data.files import make_output_temp_dir, output_file_mode
from umr_jax.errors import ModelLoadError
from umr_jax.models.bert import BertConfig, BertEncoderTower
from umr_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderTower
from umr_jax.models.layers import stack_layers, unstack_layers

T5_TYPES = ("t5", "mt5")
BERT_TYPES = ("bert", "xlm-roberta", "roberta")
SUPPORTED = T5_TYPES + BERT_TYPES

# ---------------------------------------------------------------------------------------------
# Reading checkpoint tensors lazily


class CheckpointTensors:
    """Lazy, read-only view of the tensors in a HF model folder: `names`, `get(name) -> np.ndarray`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._files: dict[str, Path] = {}
        self._torch_cache: dict[Path, dict[str, Any]] = {}
        st_index = self.folder / "model.safetensors.index.json"
        pt_index = self.folder / "pytorch_model.bin.index.json"
        if (self.folder / "model.safetensors").is_file():
            self._add_safetensors(self.folder / "model.safetensors")
        elif st_index.is_file():
            for name, fname in _weight_map(st_index).items():
                self._files[name] = self.folder / fname
        elif (self.folder / "pytorch_model.bin").is_file():
            self._add_torch(self.folder / "pytorch_model.bin")
        elif pt_index.is_file():
            for name, fname in _weight_map(pt_index).items():
                self._files[name] = self.folder / fname
        else:
            raise ModelLoadError(
                f"{self.folder}: no weights found; expected model.safetensors, model.safetensors.index.json, "
                "pytorch_model.bin or pytorch_model.bin.index.json"
            )

    def _add_safetensors(self, path: Path) -> None:
        with _open_safetensors(path) as f:
            for name in f.keys():
                self._files[name] = path

    def _add_torch(self, path: Path) -> None:
        for name in self._torch_state(path):
            self._files[name] = path

    def _torch_state(self, path: Path) -> dict[str, Any]:
        if path not in self._torch_cache:
            try:
                import torch
            except ImportError:
                raise ModelLoadError(
                    f"{path}: PyTorch pickle weights need torch to read (weights_only=True). Install it "
                    "(`pip install torch==2.13.0` or the `umr-jax[torch]` extra), or convert the folder "
                    "to model.safetensors."
                ) from None
            self._torch_cache[path] = _torch_load(torch, path)
        return self._torch_cache[path]

    @property
    def names(self) -> set[str]:
        return set(self._files)

    def get(self, name: str) -> np.ndarray:
        path = self._files[name]
        if path.suffix == ".safetensors":
            from safetensors import SafetensorError

            with _open_safetensors(path) as f:
                try:
                    return np.asarray(f.get_tensor(name))
                except SafetensorError as err:
                    raise ModelLoadError(f"{path}: tensor {name!r} cannot be read ({err}); {_REFETCH}") from None
        tensor = self._torch_state(path)[name]
        if tensor.dtype.is_floating_point:
            tensor = tensor.float()
        return tensor.numpy()


_REFETCH = "expected a complete file: it may be cut short by an interrupted download or copy; fetch or export it again"


def _open_safetensors(path: Path):
    """`safe_open(path)`, or a ModelLoadError naming the file when it is missing or not whole."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; the checkpoint index names it, so the folder is incomplete")
    try:
        return safe_open(str(path), framework="numpy")
    except SafetensorError as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err}); {_REFETCH}") from None


def _torch_load(torch, path: Path) -> dict[str, Any]:
    """A PyTorch pickle checkpoint's state dict, read with `weights_only=True` (never anything
    else: unpickling arbitrary objects can run code). Zip-format files (torch >= 1.6) are memory
    mapped; the legacy format cannot be, so it is read whole."""
    import pickle
    import zipfile

    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file; the checkpoint index names it, so the folder is incomplete")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        if "weights only load failed" not in str(err).lower():
            raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)}); {_REFETCH}") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = f"a pickled {found[1]}" if found else "pickled objects"
        raise ModelLoadError(
            f"{path}: refused for safety: torch.load(weights_only=True) found {what} besides tensors, and unpickling it "
            "could run code; expected plain tensors. Convert the checkpoint to safetensors where you trust its source: "
            "load the model with the code that saved it and call save_pretrained(DIR, safe_serialization=True), or "
            "safetensors.torch.save_file(state_dict, 'DIR/model.safetensors')"
        ) from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch checkpoint ({_first_line(err)}); {_REFETCH}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"{path}: expected a state dict (tensor name -> tensor), got {type(state).__name__} "
                             "holding other values")
    return state


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else 'no detail'}"


def _weight_map(index_path: Path) -> dict[str, str]:
    try:
        return json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{index_path}: not a valid sharded-checkpoint index ({type(err).__name__}: {err})") from None


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


# ---------------------------------------------------------------------------------------------
# Weight mappings: (HF name, our param path, transform)
#
# transforms (HF -> ours; `_inverse` goes back):
#   copy          same array
#   linear        torch Linear weight [out, in] -> Flax kernel [in, out]
#   to_heads      [heads*kv, embed] -> [embed, heads, kv]     (q/k/v projections)
#   from_heads    [embed, heads*kv] -> [heads, kv, embed]     (attention output projection)
#   bias_heads    [heads*kv] -> [heads, kv]


@dataclasses.dataclass(frozen=True)
class Entry:
    hf_name: str
    path: tuple[str, ...]
    transform: str


def _to_ours(x: np.ndarray, transform: str, shape: tuple[int, ...]) -> np.ndarray:
    """HF tensor -> our layout. Reshapes only when the leading/trailing dims agree, so a wrong
    checkpoint surfaces as a shape mismatch, never as a silently scrambled reshape."""
    if transform == "copy":
        return x
    if transform == "linear":
        return x.T
    if transform == "to_heads" and x.ndim == 2 and x.shape[1] == shape[0] and x.size == np.prod(shape):
        return x.T.reshape(shape)
    if transform == "from_heads" and x.ndim == 2 and x.shape[0] == shape[-1] and x.size == np.prod(shape):
        return x.T.reshape(shape)
    if transform == "bias_heads" and x.size == np.prod(shape):
        return x.reshape(shape)
    if transform in ("to_heads", "from_heads", "bias_heads"):
        return x  # left as is: the shape check reports it
    raise AssertionError(transform)


def _to_hf(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "copy":
        return x
    if transform == "linear":
        return x.T
    if transform == "to_heads":  # [embed, heads, kv] -> [heads*kv, embed]
        return x.reshape(x.shape[0], -1).T
    if transform == "from_heads":  # [heads, kv, embed] -> [embed, heads*kv]
        return x.reshape(-1, x.shape[-1]).T
    if transform == "bias_heads":
        return x.reshape(-1)
    raise AssertionError(transform)


def t5_mapping(cfg: T5Config, *, encoder_only: bool) -> list[Entry]:
    entries = [Entry("shared.weight", ("shared", "embedding"), "copy")]
    stacks = [("encoder", cfg.num_layers, False)]
    if not encoder_only:
        stacks.append(("decoder", cfg.num_decoder_layers, True))
    for stack, n_layers, is_decoder in stacks:
        entries.append(
            Entry(
                f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                (stack, "relpos_bias", "embedding"),
                "copy",
            )
        )
        entries.append(Entry(f"{stack}.final_layer_norm.weight", (stack, "final_norm", "scale"), "copy"))
        for i in range(n_layers):
            hf = f"{stack}.block.{i}.layer"
            ours = (stack, f"layers_{i}")
            sublayers = [("0", "SelfAttention", "self_attention")]
            if is_decoder:
                sublayers.append(("1", "EncDecAttention", "cross_attention"))
            for idx, hf_attn, our_attn in sublayers:
                for proj in ("q", "k", "v"):
                    entries.append(Entry(f"{hf}.{idx}.{hf_attn}.{proj}.weight", ours + (our_attn, proj, "kernel"), "to_heads"))
                entries.append(Entry(f"{hf}.{idx}.{hf_attn}.o.weight", ours + (our_attn, "o", "kernel"), "from_heads"))
                entries.append(Entry(f"{hf}.{idx}.layer_norm.weight", ours + (f"{our_attn}_norm", "scale"), "copy"))
            ff = "2" if is_decoder else "1"
            names = ("wi_0", "wi_1", "wo") if cfg.is_gated_act else ("wi", "wo")
            for name in names:
                entries.append(Entry(f"{hf}.{ff}.DenseReluDense.{name}.weight", ours + ("mlp", name, "kernel"), "linear"))
            entries.append(Entry(f"{hf}.{ff}.layer_norm.weight", ours + ("mlp_norm", "scale"), "copy"))
    if not encoder_only and not cfg.tie_word_embeddings:
        entries.append(Entry("lm_head.weight", ("lm_head",), "copy"))
    return entries


# Tensors a T5 checkpoint may hold that the model does not use.
T5_IGNORABLE = [
    r"(encoder|decoder)\.embed_tokens\.weight",  # copies of shared.weight
    r"decoder\.block\.0\.layer\.1\.EncDecAttention\.relative_attention_bias\.weight",  # unused in original T5
]
T5_ENCODER_ONLY_IGNORABLE = [r"decoder\..*", r"lm_head\.weight"]


def bert_mapping(cfg: BertConfig, prefix: str) -> list[Entry]:
    p = prefix
    entries = [
        Entry(f"{p}embeddings.word_embeddings.weight", ("embeddings", "word_embeddings"), "copy"),
        Entry(f"{p}embeddings.position_embeddings.weight", ("embeddings", "position_embeddings"), "copy"),
        Entry(f"{p}embeddings.token_type_embeddings.weight", ("embeddings", "token_type_embeddings"), "copy"),
        Entry(f"{p}embeddings.LayerNorm.weight", ("embeddings", "norm", "scale"), "copy"),
        Entry(f"{p}embeddings.LayerNorm.bias", ("embeddings", "norm", "bias"), "copy"),
    ]
    for i in range(cfg.num_hidden_layers):
        hf = f"{p}encoder.layer.{i}"
        ours = (f"layers_{i}",)
        for proj in ("query", "key", "value"):
            entries.append(Entry(f"{hf}.attention.self.{proj}.weight", ours + ("attention", proj, "kernel"), "to_heads"))
            entries.append(Entry(f"{hf}.attention.self.{proj}.bias", ours + ("attention", proj, "bias"), "bias_heads"))
        entries += [
            Entry(f"{hf}.attention.output.dense.weight", ours + ("attention", "output", "kernel"), "from_heads"),
            Entry(f"{hf}.attention.output.dense.bias", ours + ("attention", "output", "bias"), "copy"),
            Entry(f"{hf}.attention.output.LayerNorm.weight", ours + ("attention_norm", "scale"), "copy"),
            Entry(f"{hf}.attention.output.LayerNorm.bias", ours + ("attention_norm", "bias"), "copy"),
            Entry(f"{hf}.intermediate.dense.weight", ours + ("intermediate", "kernel"), "linear"),
            Entry(f"{hf}.intermediate.dense.bias", ours + ("intermediate", "bias"), "copy"),
            Entry(f"{hf}.output.dense.weight", ours + ("output", "kernel"), "linear"),
            Entry(f"{hf}.output.dense.bias", ours + ("output", "bias"), "copy"),
            Entry(f"{hf}.output.LayerNorm.weight", ours + ("output_norm", "scale"), "copy"),
            Entry(f"{hf}.output.LayerNorm.bias", ours + ("output_norm", "bias"), "copy"),
        ]
    if cfg.has_pooler:
        entries += [
            Entry(f"{p}pooler.dense.weight", ("pooler", "kernel"), "linear"),
            Entry(f"{p}pooler.dense.bias", ("pooler", "bias"), "copy"),
        ]
    return entries


# Tensors a BERT-family checkpoint may hold that a tower does not use: buffers and task heads
# (MLM heads of *ForMaskedLM checkpoints, NSP heads, RoBERTa's lm_head).
def bert_ignorable(prefix: str) -> list[str]:
    return [re.escape(prefix) + r"embeddings\.(position_ids|token_type_ids)", r"cls\..*", r"lm_head\..*"]


# Old TF-converted BERT checkpoints name LayerNorm params gamma/beta.
_LEGACY_RENAMES = [(re.compile(r"LayerNorm\.gamma$"), "LayerNorm.weight"), (re.compile(r"LayerNorm\.beta$"), "LayerNorm.bias")]


class _Renamed:
    """Wraps CheckpointTensors, exposing legacy gamma/beta names under their modern names."""

    def __init__(self, source: CheckpointTensors):
        self.source = source
        self.alias: dict[str, str] = {}
        for name in source.names:
            new = name
            for pattern, repl in _LEGACY_RENAMES:
                new = pattern.sub(repl, new)
            self.alias[new] = name

    @property
    def names(self) -> set[str]:
        return set(self.alias)

    def get(self, name: str) -> np.ndarray:
        return self.source.get(self.alias[name])


def _bert_prefix(names: Iterable[str], folder: Any) -> str:
    suffix = "embeddings.word_embeddings.weight"
    hits = sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))
    if len(hits) != 1:
        raise ModelLoadError(
            f"{folder}: expected exactly one BERT embedding table (*{suffix}), found {hits or 'none'}"
        )
    return hits[0]


# ---------------------------------------------------------------------------------------------
# Assembling and exporting param trees


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _flatten(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _limited(names: Iterable[str], limit: int = 25) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def abstract_params(module, *example_args) -> dict:
    """Shapes of `module`'s params (unboxed ShapeDtypeStructs), without allocating memory."""
    import jax
    import flax.linen as nn

    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example_args))
    return nn.meta.unbox(variables["params"])


def assemble_params(
    entries: list[Entry],
    source,
    expected: dict,
    ignorable: list[str],
    folder: Any,
    param_dtype: Any = np.float32,
) -> tuple[dict, list[str]]:
    """Build our numpy param tree from checkpoint tensors; strict about names and shapes.

    Returns (params, ignored checkpoint names). Raises ModelLoadError listing every missing,
    mis-shaped and unexpected tensor.
    """
    expected_flat = _flatten(expected)
    mapped_paths = {e.path for e in entries}
    unmapped = set(expected_flat) - mapped_paths
    if unmapped:  # a bug in a mapping table, not in the user's input
        raise AssertionError(f"params with no HF mapping: {sorted('/'.join(p) for p in unmapped)}")
    names = source.names
    missing, misshaped, params = [], [], {}
    for e in entries:
        want = tuple(expected_flat[e.path].shape)
        if e.hf_name not in names:
            missing.append(e.hf_name)
            continue
        value = _to_ours(source.get(e.hf_name), e.transform, want)
        if tuple(value.shape) != want:
            misshaped.append(f"{e.hf_name} (has {tuple(source.get(e.hf_name).shape)}, expected {_hf_shape(want, e.transform)})")
            continue
        _set(params, e.path, np.ascontiguousarray(value, dtype=param_dtype))
    used = {e.hf_name for e in entries}
    patterns = [re.compile(p) for p in ignorable]
    leftovers = sorted(names - used)
    ignored = [n for n in leftovers if any(p.fullmatch(n) for p in patterns)]
    extra = [n for n in leftovers if n not in ignored]
    problems = []
    if missing:
        problems.append(f"missing tensors: {_limited(missing)}")
    if misshaped:
        problems.append(f"mis-shaped tensors: {_limited(misshaped)}")
    if extra:
        problems.append(f"unexpected tensors: {_limited(extra)}")
    if problems:
        raise ModelLoadError(f"{folder}: checkpoint does not match the model; " + "; ".join(problems))
    return params, ignored


def _hf_shape(ours: tuple[int, ...], transform: str) -> tuple[int, ...]:
    return tuple(_to_hf(np.empty(ours, np.int8), transform).shape)


def hf_state_dict(entries: list[Entry], params: dict) -> dict[str, np.ndarray]:
    """Our param tree -> {HF name: fp32 numpy array}."""
    return {e.hf_name: np.ascontiguousarray(_to_hf(np.asarray(_get(params, e.path), np.float32), e.transform)) for e in entries}


# ---------------------------------------------------------------------------------------------
# Public API


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
    path = Path(folder) / "1_Pooling" / "config.json"
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
    path = Path(folder) / "modules.json"
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
    hf = read_hf_config(folder)
    if model_type_of(hf, folder) not in BERT_TYPES:
        raise ModelLoadError(f"{folder}: model_type={hf['model_type']!r} is not a BERT-family model")
    source = _Renamed(CheckpointTensors(folder))
    check_config_sizes(hf, folder)
    prefix = _bert_prefix(source.names, folder)
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
    model_type = model_type_of(read_hf_config(folder), folder)
    if model_type in T5_TYPES:
        return load_t5(folder, encoder_only=bool(as_tower), pooling=pooling or "mean", **overrides)
    if as_tower is False:
        raise ModelLoadError(f"{folder}: a {model_type} model can only be loaded as an encoder tower")
    return load_bert(folder, pooling=pooling, **overrides)


def load_tokenizer(folder: str | os.PathLike):
    """The tokenizer saved in a HF model folder (transformers.AutoTokenizer, offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


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

    folder = Path(folder)
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
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def count_params(params: dict) -> int:
    return int(sum(np.prod(np.shape(v)) for v in _flatten(params).values()))
