"""Contrastive training on (query, positive[, hard negatives], lang) pairs: WebFAQ, translated
data (mMARCO-style) or any pairs file. InfoNCE over the global batch: each query's positive
against every other passage of the batch (other positives and all hard negatives).

  umr-jax train --config configs/webfaq_scaling.py data.path=/data/webfaq data.subset_size=100000

`data.subset_size` draws a nested subset (the 10k subset contains the 1k subset, for a seed),
which is what scaling studies train on.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from umr_jax.data import formats
from umr_jax.data.pipeline import LengthBuckets
from umr_jax.data.pipeline import nested_subsets
from umr_jax.errors import InputError
from umr_jax.parallel import sharding as shd
from umr_jax.parallel.checkpoint import Checkpointer
from umr_jax.training import common
from umr_jax.training.distill import jitted_encoders
from umr_jax.training.gradcache import grad_cached_value_and_grad, plain_value_and_grad
from umr_jax.training.losses import info_nce_loss
from umr_jax.training.runner import train_loop
from umr_jax.training.state import make_optimizer, make_train_step, state_from_params

log = logging.getLogger(__name__)


def load_pairs(data) -> list[formats.Pair]:
    """Pairs from the config's `data` section: `source` "pairs" (JSONL/parquet pairs) or "webfaq"
    (WebFAQ parquet files/folder, filtered by `languages` and `min_similarity`)."""
    source = data.get("source", "pairs")
    languages = list(data.languages) if data.get("languages") else None
    if source == "webfaq":
        records = formats.read_webfaq(data.path, languages=languages, min_similarity=data.get("min_similarity"))
        pairs = [formats.webfaq_to_pair(r) for r in records]
    elif source == "pairs":
        pairs = [p for p in formats.read_pairs(data.path) if languages is None or p.lang in languages]
    else:
        raise InputError(f"data.source must be 'pairs' or 'webfaq', got {source!r}")
    if not pairs:
        raise InputError("no training pairs (check data.path, data.languages, data.min_similarity)", data.path)
    return pairs


def subset(pairs: Sequence[formats.Pair], size: int | None, seed: int) -> list[formats.Pair]:
    """A nested subset of `size` pairs (all when None/0); nested across sizes for one seed."""
    if not size or size >= len(pairs):
        return list(pairs)
    indices = nested_subsets([p.lang for p in pairs], [size], seed=seed)[size]
    return [pairs[i] for i in indices]


class PairBatches:
    """Deterministic, resumable global batches of pairs; state = (epoch, position)."""

    def __init__(self, pairs: Sequence[formats.Pair], tokenizer, *, batch_size: int, hard_negatives: int, seed: int,
                 query_max_length: int = 64, passage_max_length: int = 256, process_index: int | None = None,
                 process_count: int | None = None):
        if len(pairs) < batch_size:
            raise InputError(f"{len(pairs)} pairs cannot fill one batch of {batch_size}")
        short = next((p for p in pairs if len(p.negatives) < hard_negatives), None)
        if short is not None:
            raise InputError(f"hard_negatives={hard_negatives} but the pair for query {short.query!r} has {len(short.negatives)}")
        self.pairs, self.tokenizer = pairs, tokenizer
        self.batch_size, self.hard, self.seed = batch_size, hard_negatives, seed
        self.query_buckets = LengthBuckets.powers_of_two(query_max_length)
        self.passage_buckets = LengthBuckets.powers_of_two(passage_max_length, 32)
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        self.epoch, self.position = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return len(self.pairs) // self.batch_size

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def global_batch(self) -> dict[str, np.ndarray]:
        if self.position + self.batch_size > len(self.pairs):
            self.epoch, self.position = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.pairs))
        chosen = [self.pairs[i] for i in order[self.position : self.position + self.batch_size]]
        self.position += self.batch_size
        passages = []
        for p in chosen:
            passages.append(p.positive)
            passages.extend(p.negatives[: self.hard])
        q_tok = self.tokenizer([p.query for p in chosen], max_length=self.query_max_length, truncation=True)["input_ids"]
        p_tok = self.tokenizer(passages, max_length=self.passage_max_length, truncation=True)["input_ids"]
        pad = self.tokenizer.pad_token_id
        q_ids, q_mask = common.pad_rows(q_tok, self.query_buckets.padded(max(map(len, q_tok))), pad)
        p_ids, p_mask = common.pad_rows(p_tok, self.passage_buckets.padded(max(map(len, p_tok))), pad)
        return {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids, "passage_mask": p_mask}

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.global_batch()
        rows = self.batch_size // self.process_count
        lo, hi = self.process_index * rows, (self.process_index + 1) * rows
        group = 1 + self.hard
        return {k: (v[lo * group : hi * group] if k.startswith("passage") else v[lo:hi]) for k, v in batch.items()}


def dev_metrics(setup: common.DualEncoderSetup, params: Any, pairs: Sequence[formats.Pair], *, query_max_length: int,
                passage_max_length: int, encoders) -> dict[str, float]:
    """Each dev query against every dev positive: mean rank of its own positive, and accuracy@1."""
    encode_q, encode_p = encoders
    tok, pad = setup.tokenizer, setup.tokenizer.pad_token_id
    q_emb, p_emb = [], []
    for start in range(0, len(pairs), 64):
        chunk = pairs[start : start + 64]
        q = tok([p.query for p in chunk], max_length=query_max_length, truncation=True)["input_ids"]
        d = tok([p.positive for p in chunk], max_length=passage_max_length, truncation=True)["input_ids"]
        q_emb.append(np.asarray(encode_q(params, *common.pad_rows(q + [[pad]] * (64 - len(q)), query_max_length, pad)))[: len(chunk)])
        p_emb.append(np.asarray(encode_p(params, *common.pad_rows(d + [[pad]] * (64 - len(d)), passage_max_length, pad)))[: len(chunk)])
    scores = np.concatenate(q_emb).astype(np.float64) @ np.concatenate(p_emb).astype(np.float64).T
    own = np.diag(scores)
    ranks = 1 + np.sum(scores > own[:, None], axis=1)
    return {"positive_mean_rank": float(ranks.mean()), "accuracy_at_1": float(np.mean(ranks == 1))}


def train(config, *, output_dir: str | Path | None = None, mesh=None, rules=None) -> dict[str, Any]:
    """Contrastive training from a config (see configs/webfaq_scaling.py). Resumable."""
    from umr_jax.config import mesh_and_rules

    output = Path(output_dir or config.output_dir)
    if mesh is None:
        mesh, rules = mesh_and_rules(config)
    m, d, t = config.model, config.data, config.train
    setup = common.build_dual_encoder(m.init, separate_towers=m.separate_towers, pooling=m.get("pooling") or None,
                                      dtype=m.dtype, dropout=t.dropout, similarity=m.get("similarity", "dot"), scale=1.0)
    pairs = subset(load_pairs(d), d.get("subset_size"), t.seed)
    dev = list(formats.read_pairs(d.dev_path)) if d.get("dev_path") else []
    batches = PairBatches(pairs, setup.tokenizer, batch_size=t.batch_size, hard_negatives=d.get("hard_negatives", 0),
                          seed=t.seed, query_max_length=m.query_max_length, passage_max_length=m.passage_max_length)
    total_steps = max(1, int(math.ceil(t.epochs * batches.steps_per_epoch)))
    optimizer = make_optimizer(t.learning_rate, total_steps=total_steps, warmup_steps=min(t.warmup_steps, total_steps // 10 or 1),
                               weight_decay=t.weight_decay, eps=t.adam_eps, grad_clip_norm=t.grad_clip_norm)
    state, shardings = state_from_params(setup.params, common.boxed_abstract_params(setup.module), optimizer, mesh, rules)
    module = setup.module

    def enc_q(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_queries", rngs={"dropout": rng})

    def enc_p(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_passages", rngs={"dropout": rng})

    def loss_on_embeddings(q, p, batch):
        if m.get("similarity", "dot") == "cosine":
            q = q / jax.numpy.maximum(jax.numpy.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
            p = p / jax.numpy.maximum(jax.numpy.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
        return info_nce_loss(q, p, scale=t.scale, num_hard_negatives=d.get("hard_negatives", 0))

    n_passages = t.batch_size * (1 + d.get("hard_negatives", 0))
    make_vg = grad_cached_value_and_grad if t.grad_cache else plain_value_and_grad
    value_and_grad = make_vg(enc_q, enc_p, loss_on_embeddings, query_chunk=min(t.query_chunk, t.batch_size),
                             passage_chunk=min(t.passage_chunk, n_passages))
    step = make_train_step(None, optimizer, mesh, shardings, shd.batch_sharding(mesh), rules, value_and_grad_fn=value_and_grad)
    metrics_log = common.MetricsLog(output)
    checkpointer = Checkpointer(output / "checkpoints", save_interval_steps=t.checkpoint_every, max_to_keep=t.keep_checkpoints)
    encoders = jitted_encoders(module)
    best_file = output / "best.json"
    best = json.loads(best_file.read_text()) if best_file.is_file() else {"positive_mean_rank": math.inf}

    def evaluate(step_number: int, state_now) -> None:
        nonlocal best
        if not dev:
            return
        scores = dev_metrics(setup, state_now.params, dev, query_max_length=m.query_max_length,
                             passage_max_length=m.passage_max_length, encoders=encoders)
        metrics_log.write(step_number, scores, prefix="dev")
        if scores["positive_mean_rank"] < best["positive_mean_rank"]:
            best = {"step": step_number, **scores}
            common.export_towers(output / "best", setup, state_now.params)
            if jax.process_index() == 0:
                from umr_jax.retrieval.embeddings import atomic_write_bytes

                data = json.dumps(best, indent=2).encode()
                atomic_write_bytes(best_file, lambda f: f.write(data))

    def on_metrics(step_number: int, metrics: dict) -> None:
        if step_number % t.log_every == 0 or step_number == total_steps:
            metrics_log.write(step_number, metrics)

    def on_step(step_number: int, state_now) -> None:
        if step_number % t.eval_every == 0 or step_number == total_steps:
            evaluate(step_number, state_now)

    if checkpointer.latest_step() is None:
        evaluate(0, state)
    state, reason = train_loop(
        state=state, state_shardings=shardings, train_step=step, data=batches,
        to_global=lambda b: shd.host_batch_to_global(b, mesh), total_steps=total_steps, checkpointer=checkpointer,
        rng=jax.random.PRNGKey(t.seed), config=config.to_dict(), on_metrics=on_metrics, on_step=on_step,
    )
    checkpointer.close()
    metrics_log.close()
    final = common.export_towers(output / "final", setup, state.params) if reason == "done" else None
    return {"reason": reason, "steps": int(state.step), "total_steps": total_steps, "pairs": len(pairs), "best": best,
            "best_dir": str(output / "best") if dev else None, "final_dir": str(output / "final") if final else None}
