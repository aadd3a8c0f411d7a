r"""UMR on XOR-TyDi XOR-Retrieve at full size: mContriever, mT5-XL LM-adapted, psgs_w100 (18M
passages), the XOR train questions, ScaNN, float16 embeddings and the released run's
hyper-parameters (configs/umr_xor_retrieve.py). Meant for a TPU slice such as v5e-16, v4-8 or
v5p-8; `umr-jax compile` shows what each stage needs there:

  umr-jax compile --config umr_xor_retrieve_loop --topology v5e-16

Run (paths are where the files are on your machines or bucket):

  umr-jax loop --config umr_xor_retrieve_loop --iterations 2 \
      loop.retriever=/models/mcontriever loop.scorer=/models/mt5-xl-lm-adapt \
      loop.passages=/data/xor/psgs_w100.tsv loop.train_questions=/data/xor/xor_train_retrieve_eng_span.jsonl \
      loop.dev_questions=/data/xor/xor_dev_retrieve_eng_span.jsonl loop.eval_gold=/data/xor/xor_dev_retrieve_eng_span.jsonl \
      output_dir=runs/xor

Per role (see umr_jax/runtime.py): encoding is data parallel on each host's chips; the frozen
scorer (3.7B parameters, stored in bf16) is sharded FSDP over every chip; the retriever trains
data parallel. Layers are scanned (`scan_layers`) in every model, so compiling does not grow
with depth. See docs/scale.md for the compiled numbers per topology.
"""

import ml_collections

from umr_jax.runtime import runtime_config


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "distill"
    c.output_dir = "runs/xor"
    c.loop = dict(
        retriever="/models/mcontriever", retriever_passage="", scorer="/models/mt5-xl-lm-adapt",
        passages="/data/xor/psgs_w100.tsv", train_questions="/data/xor/xor_train_retrieve_eng_span.jsonl",
        dev_questions="/data/xor/xor_dev_retrieve_eng_span.jsonl", eval_gold="/data/xor/xor_dev_retrieve_eng_span.jsonl",
        eval_tokenizer="nltk", top_k=100, index_backend="scann", dev_pseudo_labels=True,
    )
    # 18M passages: float16 shards of 1M rows; 1024 passages of 256 tokens per batch on each host.
    c.encode = dict(dtype="bfloat16", batch_size=1024, shard_size=1_000_000, output_dtype="float16", scan_layers=True)
    # UMR's scorer: prompts truncated to 512 tokens, targets to 128, mean log-likelihood, 100 candidates.
    # 262,144 tokens per batch: 512 pairs of the longest prompts (32 per chip on a v5e-16, 2.4 GiB);
    # larger batches gather each layer's weights for more pairs (509 pairs/s estimated on v5e-16,
    # against 418 at 65,536; docs/scale.md).
    c.score = dict(dtype="bfloat16", reduction="mean", top_k=100, max_source_length=512, max_target_length=128,
                   tokens_per_batch=262144, questions_per_chunk=256, vocab_chunk_size=16384, scan_layers=True)
    # Questions at 256 tokens in training and retrieval, as the released --sequence_length 256.
    c.model = dict(init="", init_passage="", pooling="mean", separate_towers=True, dtype="bfloat16", query_max_length=256,
                   passage_max_length=256, scan_layers=True, remat="minimal")
    # Training (train and dev questions) drops one trailing "?", as released; retrieval and scoring do not.
    c.data = dict(pseudo_labels="", dev_pseudo_labels="", pseudo_labels_format="umr-jax", top_k=100,
                  candidates_per_question=16, subset_size=0, dev_split=0, batch_by_language=False, strip_question_mark=True,
                  fixed_lengths=False)
    # The released run's recipe, in true-gradient units: clip 16 and Adam eps 8e-8 placed as
    # transformers.AdamW places it (the derivation is in configs/umr_xor_retrieve.py), checkpoint
    # selection by DPR's average rank at epoch ends. It used gradient caching (chunks of 16 queries and 8
    # passages) to fit 256 passages on one GPU; the gradient is the same without it. On a slice
    # each chip holds 16 of the 256 passages, so one chunk and no caching: compiled for v5e-16,
    # 84 ms per step by the roofline estimate against 414 ms with chunks of 16, and 58 ms when
    # the layers keep only their matmul outputs for the backward (model.remat="minimal"; the
    # attention scores and dropout masks are recomputed; docs/scale.md).
    c.train = dict(
        questions_per_batch=16, epochs=10, learning_rate=2e-5, adam_eps=8e-8, adam_eps_before_bias_correction=True,
        weight_decay=0.0, warmup_steps=1237, grad_clip_norm=16.0, dropout=0.1, seed=12345, temperature=10.0,
        student_scale=1.0, grad_cache=False, query_chunk=16, passage_chunk=256,
        dev_selection="average_rank", eval_per_epoch=4, val_av_rank_start_epoch=0, val_av_rank_hard_neg=30,
        val_av_rank_other_neg=30, dev_batch_size=12, val_av_rank_max_qs=10000,
        eval_every=500, checkpoint_every=500, keep_checkpoints=3, log_every=10,
        steps=0, warmup_fraction=None, early_stopping_patience=0,
    )
    c.runtime = runtime_config(
        encode=dict(mesh="data=-1,fsdp=1,model=1", rules="data_parallel"),
        score=dict(mesh="data=1,fsdp=-1,model=1", rules="fsdp"),
        train=dict(mesh="data=-1,fsdp=1,model=1", rules="data_parallel"),
    )
    return c
