r"""Contrastive training on translated query-passage pairs (e.g. mMARCO written as a pairs
file: {query, positive, lang, negatives?, passage_lang?}), the "small, high-quality translated
data" arm.

  umr-jax train --config translated_pairs model.init=/models/xlm-roberta-base \
      data.path=/data/mmarco_pairs.parquet data.hard_negatives=1 output_dir=runs/translated

`data.direction` says which pairs train: "cross-lingual" (a translated query with the English
passage, as XOR-Retrieve asks: query in its language, passage in English), "monolingual" (a
translated query with its translated passage) or "both"; it reads each pair's `passage_lang`
(the passage's language), so a file declaring a direction must state it on every pair. None
trains on every pair, direction unstated. `data.languages="xor"`: those of XOR-TyDi's 7
languages the file has (mMARCO: ar, ja, ru); `data.stratify=True`: equal shares of them.
"""

import ml_collections

from umr_jax.runtime import runtime_config


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "contrastive"
    c.output_dir = "runs/translated"
    c.model = dict(init="", pooling="mean", separate_towers=False, similarity="cosine", dtype="bfloat16",
                   query_max_length=64, passage_max_length=256, scan_layers=True, remat="minimal")
    c.data = dict(source="pairs", path="", languages=None, min_similarity=None, subset_size=0, hard_negatives=0, dev_path="",
                  dev_split=0, fixed_lengths=False,  # True: pad every batch to the max lengths (one compiled step)
                  batch_by_language=False,  # True: one language per batch
                  stratify=False,  # True: every subset holds equal shares of its languages
                  direction=None)  # monolingual | cross-lingual | both (by each pair's passage_lang)
    c.train = dict(
        batch_size=128, epochs=1, learning_rate=1e-5, adam_eps=1e-8, weight_decay=0.01, warmup_steps=1000,
        grad_clip_norm=2.0, dropout=0.1, seed=12345, scale=20.0,
        grad_cache=False, query_chunk=128, passage_chunk=1024, eval_every=1000, checkpoint_every=1000,
        keep_checkpoints=2, log_every=10,
        steps=0, warmup_fraction=None, early_stopping_patience=0,  # train.steps=N: N steps whatever the epochs
    )
    # XLM-R base (278M parameters, fp32 with Adam: 3.3 GB) fits every chip replicated: data parallel
    # on every topology `umr-jax compile` was run for (v4-32, v5e-16, v5p-8; docs/scale.md). On a
    # slice each chip holds 8 of the 128 pairs: one chunk without gradient caching (the same
    # gradient), and layers that keep only their matmul outputs for the backward (remat).
    c.runtime = runtime_config(train=dict(mesh="data=-1,fsdp=1,model=1", rules="data_parallel"))
    return c
