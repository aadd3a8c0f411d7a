r"""The scaling study on the embedded demo corpus, in minutes on a CPU: the demo's tiny retriever
trained on nested subsets of the demo's WebFAQ-format pairs (350), its translated pairs (420)
and the UMR pseudo labels of the demo's first iteration (840 questions), each point evaluated
with XOR-Retrieve R@5kt on the 350 demo dev questions.

Every point starts from the demo's shipped tiny retriever (umr_jax/demo/pretrained/retriever);
the UMR source is iteration 0's pseudo labels in `umr-jax demo`'s output folder (default
runs/demo). Run the demo first:

  umr-jax demo --output runs/demo
  umr-jax scaling --config demo_scaling --output runs/demo_scaling
  umr-jax scaling --config demo_scaling:runs/elsewhere --output ...   # another demo folder

The demo corpus is small and synthetic: the curves show that the machinery works, not what
WebFAQ does at 47M pairs.
"""

from pathlib import Path

import ml_collections

from umr_jax.runtime import runtime_config

from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED
from umr_jax.scaling.study import scaling_config


def get_config(demo_output: str = "runs/demo"):
    p = demo_paths()
    demo = Path(demo_output)
    c = ml_collections.ConfigDict()
    c.objective = "contrastive"
    c.output_dir = "runs/demo_scaling"
    c.model = dict(init=str(PRETRAINED / "retriever"), init_passage="", pooling="mean", separate_towers=False,
                   similarity="dot", dtype="float32", query_max_length=48, passage_max_length=128)
    c.data = dict(source="pairs", path="", languages=None, min_similarity=None, subset_size=0, hard_negatives=0, dev_path="",
                  dev_split=0, batch_by_language=False, stratify=False, direction=None)
    c.train = dict(
        batch_size=32, epochs=3, learning_rate=5e-4, adam_eps=1e-8, weight_decay=0.01, warmup_steps=5,
        grad_clip_norm=2.0, dropout=0.1, seed=12345, scale=1.0, grad_cache=False, query_chunk=32, passage_chunk=32,
        eval_every=1000, checkpoint_every=1000, keep_checkpoints=1, log_every=10,
        steps=0, warmup_fraction=None, early_stopping_patience=0,  # how long: README "How long each point trains"
    )
    c.runtime = runtime_config()  # data parallel everywhere on the CPU

    c.scaling = scaling_config()
    c.scaling.sources = ("webfaq", "translated", "umr")
    c.scaling.min_size = 100             # 100, 300, then each source's whole size
    c.scaling.points_per_decade = 2
    c.scaling.flattening_gain = 1.0
    c.scaling.bootstrap_samples = 200
    c.scaling.seeds = 1                  # a study runs 3 by default; the demo's points once each
    # The report's comparisons: webfaq - translated (and WebFAQ pairs needed to match translated), where UMR sits.
    c.scaling.compare = "webfaq:translated,umr:translated,umr:webfaq"
    c.sources = dict(
        webfaq=dict(objective="contrastive", data=dict(source="webfaq", path=str(p["webfaq_dir"]), languages=None,
                                                       stratify=False)),
        # The demo's translated pairs are a native query with an English passage (passage_lang "en").
        translated=dict(objective="contrastive", model=dict(similarity="dot"),
                        data=dict(source="pairs", path=str(p["translated_pairs"]), languages=None, stratify=False,
                                  direction="cross-lingual")),
        umr=dict(objective="distill",
                 data=dict(pseudo_labels=str(demo / "iter0" / "pseudo_labels" / "pseudo_labels.jsonl"),
                           dev_pseudo_labels="", top_k=16, candidates_per_question=4),
                 train=dict(questions_per_batch=16, epochs=1, learning_rate=5e-4, temperature=10.0, student_scale=1.0,
                            query_chunk=16, passage_chunk=64)),
    )
    c.evaluation = dict(passages=str(p["passages"]), questions=str(p["dev_questions"]), gold=str(p["dev_questions"]),
                        tokenizer="nltk-line", top_k=100, index_backend="exact", dtype="float32", batch_size=256,
                        shard_size=100_000, baseline=True)
    return c
