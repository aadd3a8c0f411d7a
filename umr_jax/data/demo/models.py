"""How the demo's tiny models are made: deterministically, from a fixed seed, on this corpus.

The demo cannot download mT5-XL or mContriever, so it builds stand-ins of the same families
and trains them briefly, without any labelled (question, passage) pair:

  scorer     a tiny mT5 (gated-GELU, untied head) pre-trained with T5's span-corruption
             objective on the demo passages: a weak but real language model of them;
  retriever  a tiny XLM-R tower warmed up Contriever-style: two independent random crops of
             the same passage are a positive pair, the other passages in the batch negatives.

Both are written as Hugging Face folders (weights, config, tokenizer), exactly like real
checkpoints, and every later stage loads them through `hf_io`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from umr_jax.models import BertConfig, BertEncoderTower, DualEncoder, T5Config, T5EncoderDecoder, hf_io
from umr_jax.parallel import mesh as mesh_lib
from umr_jax.parallel import sharding as shd
from umr_jax.training.common import pad_rows as _pad
from umr_jax.training.losses import info_nce_loss
from umr_jax.training.span_corruption import span_corrupt
from umr_jax.training.state import create_train_state, make_optimizer, make_train_step


@dataclasses.dataclass(frozen=True)
class DemoModelSpec:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int


SCORER_SPEC = DemoModelSpec(steps=600, batch_size=32, learning_rate=3e-3, seed=11)
RETRIEVER_SPEC = DemoModelSpec(steps=300, batch_size=64, learning_rate=1e-3, seed=12)


def scorer_config(vocab_size: int, eos_id: int, pad_id: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, dense_act_fn="gelu_new", is_gated_act=True, tie_word_embeddings=False,
        scale_decoder_outputs=False, pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id,
        model_type="mt5", vocab_chunk_size=0,
    )


def retriever_config(vocab_size: int, pad_id: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=256 + pad_id + 1,
        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=pad_id, model_type="xlm-roberta", pooling="mean",
    )


def _train(init, loss_fn, make_batch, spec: DemoModelSpec, progress: Callable[[int, float], None] | None):
    mesh = mesh_lib.make_mesh({"data": -1})
    optimizer = make_optimizer(spec.learning_rate, total_steps=spec.steps, warmup_steps=spec.steps // 10, grad_clip_norm=1.0)
    state, shardings = create_train_state(init, optimizer, mesh, "data_parallel")
    step = make_train_step(loss_fn, optimizer, mesh, shardings, shd.batch_sharding(mesh), "data_parallel")
    rng = np.random.default_rng(spec.seed)
    key = jax.random.PRNGKey(spec.seed)
    for i in range(spec.steps):
        state, metrics = step(state, shd.host_batch_to_global(make_batch(rng), mesh), jax.random.fold_in(key, i))
        if progress is not None:
            progress(i + 1, float(metrics["loss"]))
    return jax.tree_util.tree_map(np.asarray, state.params)


def make_scorer(output: str | Path, passages: Sequence[tuple[str, str]], tokenizer_dir: str | Path, *,
                spec: DemoModelSpec = SCORER_SPEC, progress=None) -> Path:
    """Pre-train the tiny mT5 scorer with span corruption on `passages` ((title, text) pairs)."""
    tokenizer = hf_io.load_tokenizer(tokenizer_dir)
    cfg = scorer_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    docs = tokenizer([f"{title} {text}" for title, text in passages], add_special_tokens=False)["input_ids"]
    module = T5EncoderDecoder(cfg)
    src_len, tgt_len, crop = 128, 48, 110

    def make_batch(rng):
        inputs, targets = [], []
        for d in rng.integers(0, len(docs), spec.batch_size):
            doc = docs[d]
            start = int(rng.integers(0, max(1, len(doc) - crop + 1)))
            x, y = span_corrupt(doc[start : start + crop], vocab_size=cfg.vocab_size, eos_id=cfg.eos_token_id, rng=rng)
            inputs.append(x)
            targets.append(y)
        s, sm = _pad(inputs, src_len, cfg.pad_token_id)
        t, tm = _pad(targets, tgt_len, cfg.pad_token_id)
        return {"source_ids": s, "source_mask": sm, "target_ids": t, "target_mask": tm}

    def init():
        ids = np.ones((1, 8), np.int32)
        return module.init(jax.random.PRNGKey(spec.seed), ids, ids, ids)["params"]

    def loss_fn(params, batch, rng):
        log_probs = module.apply({"params": params}, batch["source_ids"], batch["source_mask"], batch["target_ids"],
                                 batch["target_mask"], method="token_log_probs")
        return -log_probs.sum() / batch["target_mask"].sum(), {}

    params = _train(init, loss_fn, make_batch, spec, progress)
    return hf_io.export_model(output, cfg, params, family="t5", tokenizer=tokenizer)


def make_retriever(output: str | Path, passages: Sequence[tuple[str, str]], tokenizer_dir: str | Path, *,
                   spec: DemoModelSpec = RETRIEVER_SPEC, progress=None) -> Path:
    """Warm up the tiny XLM-R tower Contriever-style (independent cropping) on `passages`."""
    tokenizer = hf_io.load_tokenizer(tokenizer_dir)
    cfg = retriever_config(len(tokenizer), tokenizer.pad_token_id)
    docs = tokenizer([f"{title} {text}" for title, text in passages], add_special_tokens=False)["input_ids"]
    tower = BertEncoderTower(cfg)
    model = DualEncoder(tower)  # one shared tower during the warm-up
    length = 64
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def crop(doc, rng):
        size = max(4, int(len(doc) * rng.uniform(0.1, 0.5)))
        start = int(rng.integers(0, max(1, len(doc) - size + 1)))
        return [cls] + doc[start : start + size][: length - 2] + [sep]

    def make_batch(rng):
        picks = rng.choice(len(docs), spec.batch_size, replace=False)
        q, qm = _pad([crop(docs[d], rng) for d in picks], length, cfg.pad_token_id)
        p, pm = _pad([crop(docs[d], rng) for d in picks], length, cfg.pad_token_id)
        return {"query_ids": q, "query_mask": qm, "passage_ids": p, "passage_mask": pm}

    def init():
        ids = np.full((1, 8), 5, np.int32)
        return tower.init(jax.random.PRNGKey(spec.seed), ids, np.ones_like(ids))["params"]

    def loss_fn(params, batch, rng):
        shared = {"query_tower": params}
        rq, rp = jax.random.split(rng)
        q = model.apply({"params": shared}, batch["query_ids"], batch["query_mask"], False, method="encode_queries", rngs={"dropout": rq})
        p = model.apply({"params": shared}, batch["passage_ids"], batch["passage_mask"], False, method="encode_passages", rngs={"dropout": rp})
        return info_nce_loss(q, p)

    params = _train(init, loss_fn, make_batch, spec, progress)
    return hf_io.export_model(output, cfg, params, family="bert", tokenizer=tokenizer, max_seq_length=256)
