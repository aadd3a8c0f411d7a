"""Our Flax param trees <-> Hugging Face tensor names: the T5/mT5 and BERT-family mapping
tables and their layout transforms, the checkpoint tensors a model may leave unused, and strict
assembly (every tensor present with the right shape, nothing unexpected) and export of param
trees. Part of `hf_io`, the only place that knows the HF layout.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable

import numpy as np

from umr_jax.errors import ModelLoadError
from umr_jax.models.bert import BertConfig
from umr_jax.models.hf_checkpoint import CheckpointTensors
from umr_jax.models.t5 import T5Config


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


class RenamedTensors:
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


def bert_prefix(names: Iterable[str], folder: Any) -> str:
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


def flatten_tree(tree: dict, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten_tree(value, prefix + (key,)))
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
    expected_flat = flatten_tree(expected)
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
