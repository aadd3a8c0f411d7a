"""Contrastive training on (query, positive[, hard negatives], lang) pairs: WebFAQ, translated
data (mMARCO-style) or any pairs file. InfoNCE over the global batch: each query's positive
against every other passage of the batch (other positives and all hard negatives).

  umr-jax train --config webfaq_scaling data.path=/data/webfaq data.subset_size=100000

`data.subset_size` draws a nested subset (the 10k subset contains the 1k subset, for a seed),
which is what scaling studies train on. The pairs are read by row from a store made once per
source (`data.pair_store`); the subset and each epoch's order are index arrays over it, so a
47M-pair source is never held in memory.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data import formats
from umr_jax.data.batches import EpochBatches, pad_rows, rows_of
from umr_jax.data.pair_store import PairStore, open_pair_store
from umr_jax.data.languages import XOR_LANGUAGES, to_iso639_1
from umr_jax.data.subsets import (available_by_language, held_out_indices, largest_stratified_size,
                                  nested_subset_indices, stratified_subset_indices)
from umr_jax.errors import InputError
from umr_jax.numerics import l2_normalize
from umr_jax.training import common
from umr_jax.training.distill import jitted_encoders
from umr_jax.training.losses import info_nce_loss

log = logging.getLogger(__name__)


WEBFAQ_EXCLUDED = ("en",)  # WebFAQ's English pairs are not part of the study's non-English data


def open_pairs(data) -> PairStore:
    """The pairs of the config's `data` section, as a store read by row (`data.pair_store`,
    converted on first use): `source` "pairs" (JSONL/parquet pairs, kept when their `lang` is in
    `languages`) or "webfaq" (WebFAQ parquet files/folder, filtered by `languages` and
    `min_similarity`; without `languages`, every language but English: WebFAQ's 47M non-English
    pairs). `languages` "xor": XOR-TyDi's 7. `direction` (pairs only): "monolingual",
    "cross-lingual" or "both" kinds of translated pair, by each pair's `passage_lang`. Nothing of
    the source is held in memory. Raises InputError when a language asked for has no pairs."""
    source = data.get("source", "pairs")
    if source not in ("pairs", "webfaq"):
        raise InputError(f"data.source must be 'pairs' or 'webfaq', got {source!r}")
    languages = requested_languages(data.get("languages"))
    min_similarity = data.get("min_similarity") if source == "webfaq" else None
    exclude = WEBFAQ_EXCLUDED if source == "webfaq" and languages is None else ()
    direction = data.get("direction") or None
    if source == "webfaq" and direction not in (None, "monolingual"):
        raise InputError(f"data.direction={direction}: WebFAQ pairs are monolingual (a question and its answer, in one "
                         "language); leave data.direction unset for data.source=webfaq")
    direction = None if source == "webfaq" else direction
    store = open_pair_store(source, data.path, languages=languages, min_similarity=min_similarity, exclude=exclude,
                            direction=direction)
    if languages:
        held = store.manifest.get("rows_per_language", {})
        missing = [code for code in languages if to_iso639_1(code) not in held and code not in held]
        named = _named_outright(data.get("languages"))
        if named is not None:  # "xor": those of XOR's languages the source has (an error only if it has none)
            missing = [code for code in missing if code in named] or (missing if not held else [])
        if missing:
            raise InputError(f"data.languages asks for {', '.join(missing)}, which this source has no pairs of (of "
                             f"those asked for, it has: {', '.join(sorted(held)) or 'none'})", data.path)
    return store



def requested_languages(value) -> list[str] | None:
    """`data.languages` as a list: None or "" for every language, a list, a comma-separated
    string ("ar,ja"), or "xor" for XOR-TyDi's 7 question languages (ar, bn, fi, ja, ko, ru, te):
    those of them the source has (mMARCO, say, has ar, ja and ru), where a language named
    outright must be there."""
    if not value:
        return None
    codes = [c.strip() for c in value.split(",")] if isinstance(value, str) else [str(c).strip() for c in value]
    out: list[str] = []
    for code in codes:
        for one in (XOR_LANGUAGES if code.lower() == "xor" else (code,) if code else ()):
            if one not in out:
                out.append(one)
    return out or None


def _named_outright(value) -> set[str] | None:
    """The codes `data.languages` names besides "xor", or None when it does not say "xor"."""
    codes = [str(code).strip() for code in (value.split(",") if isinstance(value, str) else (value or ()))]
    return {code for code in codes if code.lower() != "xor"} if any(c.lower() == "xor" for c in codes) else None


def training_subset(store: PairStore, data, seed: int) -> np.ndarray | None:
    """The rows a run trains on (None: all): `data.subset_size` rows drawn from every language
    together, or with `data.stratify` equal shares of each language (`subset_size` 0: the
    largest subset with equal shares); `data.dev_split` rows held out of either."""
    held_out = int(data.get("dev_split") or 0)
    if data.get("stratify"):
        return stratified_subset_indices(store.row_languages(), store.languages, data.get("subset_size"), seed,
                                         noun="pairs", held_out=held_out)
    return nested_subset_indices(len(store), data.get("subset_size"), seed, noun="pairs", held_out=held_out)


def training_pairs_available(data, seed: int) -> int:
    """How many pairs a run of this `data` section can train on (`seed`: the subset seed, which
    picks the dev rows): the source's rows less the dev split, or with `data.stratify` the
    largest subset with equal shares of each language."""
    store = open_pairs(data)
    held_out = int(data.get("dev_split") or 0)
    if held_out >= len(store):
        raise InputError(f"data.dev_split={held_out} leaves none of the source's {len(store)} training pairs")
    if data.get("stratify"):
        return largest_stratified_size(available_by_language(store.row_languages(), store.languages, seed,
                                                             held_out=held_out))
    return len(store) - held_out


def pair_languages(pairs: Sequence[formats.Pair] | PairStore, subset: np.ndarray | None) -> np.ndarray:
    """Each training pair's language (of `subset`'s rows when given): codes from a store's
    memory-mapped column, never its pairs."""
    if isinstance(pairs, PairStore):
        codes = pairs.row_languages()
        return np.asarray(codes if subset is None else codes[subset])
    rows = range(len(pairs)) if subset is None else subset
    return np.array([pairs[int(i)].lang for i in rows])


class PairBatches(EpochBatches):
    """Deterministic, resumable global batches of pairs (each query's positive, then its hard
    negatives); state = (epoch, position). See `data.batches.EpochBatches`. `pairs` is a list
    or a `PairStore`; `subset` the rows to train on (all when None), an index array."""

    def __init__(self, pairs: Sequence[formats.Pair] | PairStore, tokenizer, *, batch_size: int, hard_negatives: int,
                 seed: int, query_max_length: int = 64, passage_max_length: int = 256, process_index: int | None = None,
                 process_count: int | None = None, fixed_lengths: bool = False, subset: np.ndarray | None = None,
                 by_language: bool = False):
        super().__init__(pairs, tokenizer, examples_per_batch=batch_size, passages_per_example=1 + hard_negatives,
                         seed=seed, query_max_length=query_max_length, passage_max_length=passage_max_length,
                         process_index=process_index, process_count=process_count, fixed_lengths=fixed_lengths,
                         noun="pairs", batch_name="batch_size", subset=subset,
                         languages=pair_languages(pairs, subset) if by_language else None)
        if isinstance(pairs, PairStore):  # the store knows its fewest negatives: no pass over 47M rows
            short = pairs[pairs.manifest["fewest_negatives_row"]] if pairs.fewest_negatives < hard_negatives else None
        else:
            short = next((p for p in pairs if len(p.negatives) < hard_negatives), None)
        if short is not None:
            raise InputError(f"hard_negatives={hard_negatives} but the pair for query {short.query!r} has {len(short.negatives)}")
        self.pairs, self.batch_size, self.hard = pairs, batch_size, hard_negatives

    def build_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        chosen = rows_of(self.pairs, indices)
        passages = []
        for p in chosen:
            passages.append(p.positive)
            passages.extend(p.negatives[: self.hard])
        q_tok = self.query_tokens([p.query for p in chosen])
        p_tok = self.tokenizer(passages, max_length=self.passage_max_length, truncation=True)["input_ids"]
        q_ids, q_mask = self.padded(q_tok, self.query_buckets)
        p_ids, p_mask = self.padded(p_tok, self.passage_buckets)
        return {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids, "passage_mask": p_mask}


def contrastive_loss(m, t, hard_negatives: int):
    """`loss_on_embeddings(q, p, batch)` of the config's `model`/`train` sections (InfoNCE over
    the global batch; cosine similarity when `model.similarity` says so)."""

    def loss_on_embeddings(q, p, batch):
        if m.get("similarity", "dot") == "cosine":
            q, p = l2_normalize(q), l2_normalize(p)
        return info_nce_loss(q, p, scale=t.scale, num_hard_negatives=hard_negatives)

    return loss_on_embeddings


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
        q_emb.append(np.asarray(encode_q(params, *pad_rows(q + [[pad]] * (64 - len(q)), query_max_length, pad)))[: len(chunk)])
        p_emb.append(np.asarray(encode_p(params, *pad_rows(d + [[pad]] * (64 - len(d)), passage_max_length, pad)))[: len(chunk)])
    scores = np.concatenate(q_emb).astype(np.float64) @ np.concatenate(p_emb).astype(np.float64).T
    own = np.diag(scores)
    ranks = 1 + np.sum(scores > own[:, None], axis=1)
    return {"positive_mean_rank": float(ranks.mean()), "accuracy_at_1": float(np.mean(ranks == 1))}


def train(config, *, output_dir: str | Path | None = None, runtime=None, resume_anyway: bool = False,
          progress=None) -> dict[str, Any]:
    """Contrastive training from a config (see configs/webfaq_scaling.py) on `runtime`'s train
    mesh (default: the config's). Resumable from a checkpoint made with the same config (or with
    `resume_anyway`), as `distill.train`."""
    from umr_jax.runtime import Runtime

    output = storage.local(output_dir or config.output_dir)  # a gs:// run: its local mirror
    runtime = runtime or Runtime.from_config(config)
    config = common.resolved_config(config, output, runtime)  # what config.json and the checkpoints hold
    common.check_resume(output, config, resume_anyway=resume_anyway)
    mesh, rules = runtime.mesh_and_rules("train")
    m, d, t = config.model, config.data, config.train
    setup = common.build_dual_encoder(m.init, separate_towers=m.separate_towers, pooling=m.get("pooling") or None,
                                      dtype=m.dtype, dropout=t.dropout, similarity=m.get("similarity", "dot"), scale=1.0,
                                      scan_layers=bool(m.get("scan_layers", False)),
                                      remat=m.get("remat", "none"))
    store = open_pairs(d)
    seed, held_out = d.get("subset_seed", t.seed), int(d.get("dev_split") or 0)
    if held_out and d.get("dev_path"):
        raise InputError("data.dev_split and data.dev_path both name dev pairs; give one")
    subset = training_subset(store, d, seed)
    if held_out:  # pairs of the source that no subset holds (`subsets.held_out_indices`)
        dev = [store[int(i)] for i in held_out_indices(len(store), held_out, seed)]
    else:
        dev = list(formats.read_pairs(d.dev_path)) if d.get("dev_path") else []
    batches = PairBatches(store, setup.tokenizer, batch_size=t.batch_size, hard_negatives=d.get("hard_negatives", 0),
                          seed=t.seed, query_max_length=m.query_max_length, passage_max_length=m.passage_max_length,
                          fixed_lengths=bool(d.get("fixed_lengths", False)), subset=subset,
                          by_language=bool(d.get("batch_by_language")))
    encoders = jitted_encoders(setup.module)
    hard = d.get("hard_negatives", 0)
    loss_on_embeddings = contrastive_loss(m, t, hard)

    def dev_metrics_of(params):
        return dev_metrics(setup, params, dev, query_max_length=m.query_max_length,
                           passage_max_length=m.passage_max_length, encoders=encoders)

    steps = common.total_steps_of(t, batches.steps_per_epoch)
    summary = common.run_dual_encoder_training(
        config=config, setup=setup, batches=batches, loss_on_embeddings=loss_on_embeddings,
        queries_per_batch=t.batch_size, passages_per_batch=t.batch_size * (1 + hard),
        warmup_steps=common.warmup_steps_of(t, steps, min(t.warmup_steps, steps // 10 or 1)), output=output, mesh=mesh,
        rules=rules,
        dev_metrics=dev_metrics_of if dev else None, selection_metric="positive_mean_rank",
        resume_anyway=resume_anyway, progress=progress,
    )
    return {**summary, "pairs": batches.count}
