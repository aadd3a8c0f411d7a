"""Each stage's device program, built from a config for any mesh, with abstract inputs.

The functions are the ones the stages run: `labeling.scorer.jitted_score` (score),
`retrieval.encode.jitted_embed` (encode), `training.common.train_step_for` with
`distill.distillation_loss` (distill) or `contrastive.contrastive_loss` (contrastive). Their
inputs are `ShapeDtypeStruct`s carrying the shardings the stage would give them, so
`program.lower().compile()` builds the real program for the mesh's devices (TPU devices
from `aot.chips.tpu_devices`, or any others) without weights or data.

Model architectures come from the folders the config names when they are here, else from
the preset their names match (`models.architectures`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax.errors import UsageError
from umr_jax.models.flops import dual_encoder_step_flops, scorer_flops, tower_forward_flops

STAGES = ("score", "encode", "distill", "contrastive")
ROLE = {"score": "score", "encode": "encode", "distill": "train", "contrastive": "train"}
# The config key each stage's batch size is read from (`--max-batch` searches it).
BATCH_KEY = {"score": "score.tokens_per_batch", "encode": "encode.batch_size", "distill": "train.questions_per_batch",
             "contrastive": "train.batch_size"}


@dataclasses.dataclass
class Program:
    """One stage's program for one mesh: what to lower, its inputs by kind, and analytic counts."""

    stage: str
    role: str
    jitted: Any  # has .lower(*args)
    args: tuple
    groups: dict[str, Any]  # kind ("parameters", "optimizer state", "batch", ...) -> pytree of the args' structs
    model: str  # what the architecture came from
    shapes: dict[str, Any]  # batch shapes and sizes, for the report
    model_flops: float  # analytic FLOPs of one step, all chips: the model's (forward, + backward when training)
    program_flops: float  # analytic FLOPs the program computes (gradient caching re-runs the forward)
    tokens: int  # tokens per step
    items: int  # questions / passages / pairs per step
    item_name: str

    def lower(self):
        return self.jitted.lower(*self.args)


def _get(config, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        if node is None or part not in node:
            return default
        node = node[part]
    return node


def _structs(tree: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def _batch_structs(shapes: dict[str, tuple], dtypes: dict[str, Any], mesh) -> dict[str, jax.ShapeDtypeStruct]:
    from umr_jax.parallel import sharding as shd

    sharding = shd.batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(shape, dtypes.get(k, jnp.int32), sharding=sharding) for k, shape in shapes.items()}


def _batch_devices(mesh) -> int:
    from umr_jax.parallel import sharding as shd

    return int(np.prod([mesh.shape[a] for a in shd.BATCH_AXES]))


def _abstract_params(module, example_args, param_dtype=None) -> Any:
    variables = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), *example_args))
    import flax.linen as nn

    params = nn.meta.unbox(variables["params"])
    if param_dtype is not None:
        params = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(param_dtype)), params)
    return params


# ---------------------------------------------------------------------------------------------
# Stage programs


def score_program(config, mesh, rules) -> Program:
    from umr_jax.labeling.scorer import batch_shapes, jitted_score, scorer_overrides
    from umr_jax.models.hf_io import t5_config_from_hf, model_type_of, T5_TYPES
    from umr_jax.models.t5 import T5EncoderDecoder
    from umr_jax.parallel import sharding as shd

    s = config.score
    ref = _get(config, "loop.scorer", "")
    hf, source = _architecture(ref, "loop.scorer")
    if model_type_of(hf, ref) not in T5_TYPES:
        raise UsageError(f"the scorer {ref!r} is a {hf.get('model_type')} model; the score stage needs a T5/mT5")
    dtype = s.get("dtype", "bfloat16")
    cfg = t5_config_from_hf(hf, untied_head=hf.get("tie_word_embeddings", True) is False,
                            **scorer_overrides(dtype, s.get("vocab_chunk_size", 16384), bool(s.get("scan_layers", False))))
    module = T5EncoderDecoder(cfg)
    example = (np.ones((1, 4), np.int32),) * 3
    param_shardings = shd.abstract_shardings(module, example, mesh, rules)
    params = _structs(_abstract_params(module, example, param_dtype=dtype), param_shardings)
    blocks = _batch_devices(mesh)
    source_length, target_length = int(s.max_source_length), int(s.max_target_length)
    # As QuestionLikelihoodScorer.batch_rows: the token budget over the longest source bucket,
    # every pair with its own source (no sharing: the most encoder work a batch can hold).
    rows = max(blocks, max(1, int(s.tokens_per_batch) // source_length) // blocks * blocks)
    shapes = batch_shapes(rows, rows, blocks, source_length, target_length)
    batch = _batch_structs(shapes, {}, mesh)
    jitted = jitted_score(module, param_shardings, mesh, rules, s.get("reduction", "mean"))
    flops = scorer_flops(cfg, rows, source_length, rows, target_length)
    return Program("score", "score", jitted, (params, batch), {"parameters": params, "batch": batch}, source,
                   {"pairs": rows, "source_length": source_length, "target_length": target_length, "dtype": dtype},
                   flops, flops, rows * (source_length + target_length), rows, "pairs")


def _architecture(ref: str, key: str):
    from umr_jax.models.architectures import PRESETS, architecture

    if not ref:
        raise UsageError(f"{key} is empty; set it to a model folder, a model ID or an architecture name "
                         f"({', '.join(sorted(PRESETS))}), e.g. {key}=xlm-roberta-base")
    return architecture(ref)


def _tower_config(ref: str, key: str, dtype: str, scan_layers: bool, dropout: float | None = None,
                  pooling: str | None = None, remat: str = "none"):
    """(family, tower config, what it came from) of a retriever folder or preset."""
    from umr_jax.models import hf_io

    hf, source = _architecture(ref, key)
    model_type = hf_io.model_type_of(hf, ref)
    options: dict[str, Any] = {"dtype": dtype, "scan_layers": scan_layers, "remat": remat}
    if model_type in hf_io.T5_TYPES:
        if dropout is not None:
            options["dropout_rate"] = dropout
        return "t5-encoder", hf_io.t5_config_from_hf(hf, untied_head=False, **options), source
    if dropout is not None:
        options.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return "bert", hf_io.bert_config_from_hf(hf, pooling=pooling or "mean", has_pooler=False, **options), source


def encode_program(config, mesh, rules) -> Program:
    from umr_jax.models import BertEncoderTower, T5EncoderTower
    from umr_jax.parallel import sharding as shd
    from umr_jax.retrieval.encode import jitted_embed

    e = config.encode
    key = "loop.retriever" if _get(config, "loop.retriever") else "model.init"
    family, cfg, source = _tower_config(_get(config, key, ""), key, e.get("dtype", "bfloat16"), bool(e.get("scan_layers", False)),
                                        pooling=_get(config, "model.pooling") or None)
    module = T5EncoderTower(cfg) if family == "t5-encoder" else BertEncoderTower(cfg)
    example = (np.ones((1, 4), np.int32),) * 2
    param_shardings = shd.abstract_shardings(module, example, mesh, rules)
    params = _structs(_abstract_params(module, example), param_shardings)
    blocks = _batch_devices(mesh)
    rows = int(math.ceil(int(e.batch_size) / blocks)) * blocks  # TowerEncoder.round_batch
    length = int(_get(config, "model.passage_max_length", 256))
    batch = _batch_structs({"input_ids": (rows, length), "attention_mask": (rows, length)}, {}, mesh)
    jitted = jitted_embed(module, param_shardings, mesh, rules, normalize=False)
    flops = rows * tower_forward_flops(cfg, length)
    return Program("encode", "encode", jitted, (params, batch["input_ids"], batch["attention_mask"]),
                   {"parameters": params, "batch": batch}, source,
                   {"passages": rows, "length": length, "dtype": e.get("dtype", "bfloat16")},
                   flops, flops, rows * length, rows, "passages")


def _train_program(stage: str, config, mesh, rules, queries: int, passages: int, extra: dict[str, tuple],
                   loss: Callable) -> Program:
    from umr_jax.training import common
    from umr_jax.training.state import abstract_state

    m, t = config.model, config.train
    key = "model.init" if m.get("init") or not _get(config, "loop.retriever") else "loop.retriever"  # the loop trains its retriever
    family, cfg, source = _tower_config(_get(config, key, ""), key, m.get("dtype", "bfloat16"), bool(m.get("scan_layers", False)),
                                        dropout=t.get("dropout", 0.1), pooling=m.get("pooling") or None,
                                        remat=m.get("remat", "none"))
    module = common.dual_encoder_module(cfg, family, separate_towers=bool(m.separate_towers), pooling=m.get("pooling") or None,
                                        similarity=m.get("similarity", "dot"))
    optimizer = common.optimizer_for(t, total_steps=1000, warmup_steps=min(int(t.warmup_steps), 100))
    state, state_shardings = abstract_state(common.boxed_abstract_params(module), optimizer, mesh, rules)
    step = common.train_step_for(module, t, optimizer, mesh, rules, state_shardings, loss,
                                 queries_per_batch=queries, passages_per_batch=passages)
    q_len, p_len = int(m.query_max_length), int(m.passage_max_length)
    shapes = {"query_ids": (queries, q_len), "query_mask": (queries, q_len), "passage_ids": (passages, p_len),
              "passage_mask": (passages, p_len), **extra}
    batch = _batch_structs(shapes, {"lm_scores": jnp.float32, "candidate_mask": jnp.bool_}, mesh)
    from umr_jax.parallel import sharding as shd

    rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=shd.replicated(mesh))
    model_flops = dual_encoder_step_flops(cfg, queries, q_len, passages, p_len)  # forward + backward = 3 forwards
    # Gradient caching adds a forward without gradients, and remat="full" runs every layer's
    # forward again in the backward ("minimal" recomputes no matmul).
    passes = 3 + (1 if t.grad_cache else 0) + (1 if m.get("remat", "none") == "full" else 0)
    return Program(stage, "train", step, (state, batch, rng),
                   {"parameters": state.params, "optimizer state": state.opt_state, "batch": batch}, source,
                   {"queries": queries, "passages": passages, "query_length": q_len, "passage_length": p_len,
                    "grad_cache": bool(t.grad_cache), "dtype": m.get("dtype", "bfloat16")},
                   model_flops, model_flops * passes / 3, queries * q_len + passages * p_len, queries, "queries")


def distill_program(config, mesh, rules) -> Program:
    from umr_jax.training.distill import distillation_loss

    q, c = int(config.train.questions_per_batch), int(config.data.candidates_per_question)
    return _train_program("distill", config, mesh, rules, q, q * c, {"lm_scores": (q, c), "candidate_mask": (q, c)},
                          distillation_loss(config.train))


def contrastive_program(config, mesh, rules) -> Program:
    from umr_jax.training.contrastive import contrastive_loss

    b, hard = int(config.train.batch_size), int(config.data.get("hard_negatives", 0))
    return _train_program("contrastive", config, mesh, rules, b, b * (1 + hard), {},
                          contrastive_loss(config.model, config.train, hard))


BUILDERS = {"score": score_program, "encode": encode_program, "distill": distill_program,
            "contrastive": contrastive_program}


def stages_of(config) -> list[str]:
    """The stages a config describes: a loop config has score, encode and distill; a training
    config its objective."""
    if "loop" in config:
        return ["encode", "score", "distill"]
    objective = config.get("objective", "distill")
    return [objective] if objective in STAGES else []


def build(stage: str, config, mesh, rules) -> Program:
    if stage not in BUILDERS:
        raise UsageError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    needs = {"score": ("score",), "encode": ("encode",), "distill": ("model", "train", "data"),
             "contrastive": ("model", "train", "data")}[stage]
    missing = [k for k in needs if k not in config]
    if missing:
        raise UsageError(f"the config has no {', '.join(missing)} section, which the {stage} stage needs; "
                         f"its stages: {', '.join(stages_of(config)) or 'none'}")
    try:
        return BUILDERS[stage](config, mesh, rules)
    except (AttributeError, KeyError) as err:  # ml_collections names the missing key
        named = re.search(r"[A-Za-z_][A-Za-z0-9_]*", str(err))  # the key, not ml_collections' "Did you mean ..."
        key = named.group(0) if named else str(err)
        raise UsageError(f"the {stage} stage needs a key this config lacks: {key!r} (stages of this config: "
                         f"{', '.join(stages_of(config)) or 'none'})") from None
