r"""The scaling study: the same retriever trained on nested, log-spaced subsets of WebFAQ (1k to
all 47M non-English pairs), of translated pairs and of UMR pseudo labels, each point evaluated
on XOR-Retrieve dev (R@5kt), with a saturating power law fitted per source.

  umr-jax scaling --config webfaq_scaling --output runs/scaling \
      model.init=/models/xlm-roberta-base \
      sources.webfaq.data.path=/data/webfaq \
      sources.translated.data.path=/data/mmarco_pairs.parquet \
      sources.umr.data.pseudo_labels=runs/xor/iter0/pseudo_labels sources.umr.model.init=/models/mcontriever \
      evaluation.passages=/data/xor/psgs_w100.tsv evaluation.questions=/data/xor/xor_dev_retrieve_eng_span.jsonl \
      evaluation.gold=/data/xor/xor_dev_retrieve_eng_span.jsonl

The base sections (model, data, train) are also a plain contrastive run on WebFAQ (batch 128,
lr 1e-5, one epoch, in-batch InfoNCE, as the WebFAQ paper reports, here with the study's
warm-up over 10% of the run and early stopping on 1000 held-out pairs; `train.warmup_fraction=None
train.early_stopping_patience=0 data.dev_split=0` for the paper's 1000 warm-up steps and no
stopping), on `data.subset_size` pairs:

  umr-jax train --config webfaq_scaling model.init=/models/xlm-roberta-base \
      data.path=/data/webfaq data.subset_size=100000 output_dir=runs/webfaq/100k
"""

import ml_collections

from umr_jax.runtime import runtime_config

from umr_jax.scaling.study import scaling_config


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "contrastive"
    c.output_dir = "runs/webfaq"
    c.model = dict(init="", pooling="mean", separate_towers=False, similarity="cosine", dtype="bfloat16",
                   query_max_length=64, passage_max_length=256, scan_layers=True, remat="minimal")
    # source "webfaq": per-language parquet files or a folder of them; languages: None = all non-English,
    # "xor" = XOR-TyDi's 7 (ar, bn, fi, ja, ko, ru, te), or a list; min_similarity: keep pairs whose
    # semantic_similarity_score is at least this; stratify: equal shares of the languages in every subset.
    c.data = dict(source="webfaq", path="", languages=None, min_similarity=None, subset_size=0, hard_negatives=0, dev_path="",
                  dev_split=0, fixed_lengths=False,  # True: pad every batch to the max lengths (one compiled step)
                  batch_by_language=True,  # one language per batch, as WebFAQ trains
                  stratify=False, direction=None)  # direction: translated pairs only (configs/translated_pairs.py)
    c.train = dict(
        batch_size=128, epochs=1, learning_rate=1e-5, adam_eps=1e-8, weight_decay=0.01, warmup_steps=1000,
        grad_clip_norm=2.0, dropout=0.1, seed=12345, scale=20.0,  # cosine / 0.05
        grad_cache=False, query_chunk=128, passage_chunk=1024, eval_every=1000, checkpoint_every=1000,
        keep_checkpoints=2, log_every=10,
        steps=0, warmup_fraction=None, early_stopping_patience=0,  # set for the study below
    )
    # XLM-R base (278M parameters, fp32 with Adam: 3.3 GB) fits every chip replicated: data parallel
    # on every topology `umr-jax compile` was run for (v4-32, v5e-16, v5p-8; docs/scale.md). On a
    # slice each chip holds 8 of the 128 pairs: one chunk without gradient caching (the same
    # gradient), and layers that keep only their matmul outputs for the backward (remat).
    c.runtime = runtime_config(train=dict(mesh="data=-1,fsdp=1,model=1", rules="data_parallel"))

    # ---- the study (umr-jax scaling) ----
    c.scaling = scaling_config()
    c.scaling.sources = ("webfaq", "translated", "umr")
    c.scaling.min_size = 1000           # 1k, 3k, 10k, ... up to each source's whole size (47M for WebFAQ)
    c.scaling.points_per_decade = 2
    c.scaling.flattening_gain = 1.0     # n*: where 10x more data adds less than 1 point of R@5kt
    # Training length, the same rules for every arm: each point trains its arm's epochs over its
    # subset, warms up over 10% of its own run (not a fixed 1000 steps, which would cover the
    # small points whole), and stops early when 3 dev measurements in a row do not beat the best
    # on 1000 examples held out of its source (in no subset). For fixed compute instead:
    # scaling.protocol=steps scaling.steps=N (every point N steps, no early stopping).
    c.scaling.protocol = "epochs"
    c.train.warmup_fraction = 0.1
    c.train.early_stopping_patience = 3
    c.data.dev_split = 1000
    c.sources = dict(
        # The arms' data, declared: WebFAQ's non-English pairs (sources.webfaq.data.languages=xor
        # sources.webfaq.data.stratify=True for XOR's languages at equal shares); the translated set
        # as XOR-Retrieve pairs its languages, a translated query with an English passage (each pair's
        # passage_lang "en"; "monolingual" or "both" for the other kinds), in those of XOR's
        # languages it has (mMARCO: ar, ja, ru).
        webfaq=dict(objective="contrastive", data=dict(source="webfaq", path="", languages=None, min_similarity=None,
                                                       stratify=False)),
        translated=dict(objective="contrastive", data=dict(source="pairs", path="", languages="xor",
                                                           direction="cross-lingual", stratify=False)),
        # UMR: distillation from the LM's scores, with the released run's settings (configs/umr_xor_retrieve.py);
        # a point's size counts questions, each with its scored candidates.
        # Its own start, as UMR trains: mContriever (sources.umr.model.init=/models/mcontriever); left
        # None, it starts from the shared model.init and the report calls it "distillation from" that.
        umr=dict(objective="distill",
                 model=dict(init=None, separate_towers=True, similarity="dot"),
                 data=dict(pseudo_labels="", top_k=100, candidates_per_question=16),
                 train=dict(questions_per_batch=16, epochs=10, learning_rate=2e-5, weight_decay=0.0, warmup_steps=1237,
                            temperature=10.0, student_scale=1.0, query_chunk=16, passage_chunk=256, eval_every=500,
                            checkpoint_every=500)),
    )
    c.evaluation = dict(passages="", questions="", gold="", tokenizer="nltk", top_k=100, index_backend="scann",
                        dtype="bfloat16", batch_size=1024, shard_size=1_000_000, baseline=True)
    return c
