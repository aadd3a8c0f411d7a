r"""UMR stage 2 on XOR-TyDi XOR-Retrieve, with the released run's hyper-parameters.

Run (after `umr-jax score` has written pseudo labels):

  umr-jax train --config umr_xor_retrieve \
      model.init=/models/mcontriever \
      data.pseudo_labels=runs/xor/iter0/pseudo_labels data.dev_pseudo_labels=runs/xor/iter0/dev_pseudo_labels \
      output_dir=runs/xor/iter0/train

On a TPU pod set the mesh, e.g. `runtime.train.mesh=data=-1,fsdp=4,model=1 runtime.train.rules=fsdp`.
"""

import ml_collections

from umr_jax.runtime import runtime_config


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "distill"
    c.output_dir = "runs/umr_xor_retrieve"
    # mContriever: mBERT-cased, mean pooling; query and passage towers start from the same weights.
    c.model = dict(init="", init_passage="", pooling="mean", separate_towers=True, dtype="bfloat16", query_max_length=64,
                   passage_max_length=256)
    c.data = dict(pseudo_labels="", dev_pseudo_labels="", top_k=100, candidates_per_question=16, subset_size=0,
                  fixed_lengths=False)  # True: pad every batch to the max lengths (one compiled step)
    c.train = dict(
        questions_per_batch=16,
        epochs=10,
        learning_rate=2e-5,
        adam_eps=1e-8,
        weight_decay=0.0,
        warmup_steps=1237,
        grad_clip_norm=2.0,
        dropout=0.1,
        seed=12345,
        temperature=10.0,     # teacher = log_softmax(10 x LM score)
        student_scale=1.0,    # ART divides dot products by sqrt(768): 0.0360844
        grad_cache=True,
        query_chunk=16,
        passage_chunk=8,
        eval_every=500,
        checkpoint_every=500,
        keep_checkpoints=3,
        log_every=10,
    )
    c.runtime = runtime_config()
    return c
