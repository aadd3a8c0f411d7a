r"""Contrastive training on WebFAQ (XLM-R base, batch 128, lr 1e-5, one epoch, in-batch InfoNCE,
as the WebFAQ paper reports), on a nested subset of `data.subset_size` pairs.

  umr-jax train --config configs/webfaq_scaling.py model.init=/models/xlm-roberta-base \
      data.path=/data/webfaq data.subset_size=100000 output_dir=runs/webfaq/100k
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "contrastive"
    c.output_dir = "runs/webfaq"
    c.model = dict(init="", pooling="mean", separate_towers=False, similarity="cosine", dtype="bfloat16",
                   query_max_length=64, passage_max_length=256)
    # source "webfaq": per-language parquet files or a folder of them; languages: None = all non-English.
    c.data = dict(source="webfaq", path="", languages=None, min_similarity=None, subset_size=0, hard_negatives=0, dev_path="")
    c.train = dict(
        batch_size=128, epochs=1, learning_rate=1e-5, adam_eps=1e-8, weight_decay=0.01, warmup_steps=1000,
        grad_clip_norm=2.0, dropout=0.1, seed=12345, scale=20.0,  # cosine / 0.05
        grad_cache=True, query_chunk=64, passage_chunk=64, eval_every=1000, checkpoint_every=1000,
        keep_checkpoints=2, log_every=10,
    )
    c.mesh = dict(data=-1, fsdp=1, model=1)
    c.sharding_rules = "data_parallel"
    return c
