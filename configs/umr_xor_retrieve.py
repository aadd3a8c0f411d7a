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


# The released run's training recipe in true-gradient units (MiuLab/UMR,
# train_dense_encoder_with_llm.py, run as `CUDA_VISIBLE_DEVICES=... python3 ... --max_grad_norm 2.0
# --grad_cache --fp16`): shared by this config and configs/umr_xor_retrieve_loop.py.
#
# Gradient clipping. Its gradient-cache backward multiplies every surrogate by
# distributed_factor / 8, so the parameter gradient it accumulates is (distributed_factor / 8) x
# the true gradient of the loss on this process's rows. With one process (the released command;
# several visible GPUs make it torch.nn.DataParallel, which sums replica gradients)
# distributed_factor is 1: the gradient is 1/8 of the true one. GradScaler.unscale_ then removes
# the fp16 loss scale exactly, and clip_grad_norm_(2.0) clips that 1/8-gradient at 2.0, which is
# the true gradient clipped at 2.0 x 8 = 16. With N processes (torch.distributed.launch)
# distributed_factor is N and DistributedDataParallel averages the N processes' gradients, each
# the true gradient's share from its rows times N / 8: the sum is again 1/8 of the true gradient
# of the global batch, so the effective threshold is 16 for any number of processes (that is what
# the factor N is for). Ours clips the exact gradient, so it clips at 16.
#
# Adam. A constant gradient factor c passes through Adam except through eps: m / (sqrt(v) + eps)
# on c x g is m / (sqrt(v) + eps / c) on g. The released optimizer is transformers.AdamW (eps 1e-8,
# weight decay 0), which adds eps to sqrt(v) before the bias correction; on the true gradient that
# is eps = 8 x 1e-8 = 8e-8 added the same way (adam_eps_before_bias_correction).
#
# Schedule: linear warm-up over 1237 updates from 0, then linear decay to 0 at the last update
# (DPR's get_schedule_linear; update k, from 0, uses lr x k / 1237 while k < 1237).
RELEASED_TRAIN = dict(
    questions_per_batch=16,
    epochs=10,
    learning_rate=2e-5,
    adam_eps=8e-8,                          # 1e-8 on the released 1/8-scaled gradient (above)
    adam_eps_before_bias_correction=True,   # transformers.AdamW's placement of eps
    weight_decay=0.0,
    warmup_steps=1237,
    grad_clip_norm=16.0,                    # --max_grad_norm 2.0 on the released 1/8-scaled gradient (above)
    dropout=0.1,
    seed=12345,
    temperature=10.0,     # teacher = log_softmax(10 x LM score)
    student_scale=1.0,    # ART divides dot products by sqrt(768): 0.0360844
    grad_cache=True,
    query_chunk=16,
    passage_chunk=8,
    # Checkpoint selection as released: DPR's average rank of each dev question's positive (the
    # LM's top candidate) among the pooled passages of all dev questions (positive + 30 hard + 30
    # other negatives each, dev batches of 12, at most 10,000 questions), measured 4 times per
    # epoch; only end-of-epoch measurements from epoch 0 on can become the best (umr_jax/training/
    # dev_selection.py). "teacher_best_rank" is ours: every eval_every steps, step 0 included.
    dev_selection="average_rank",
    eval_per_epoch=4,
    val_av_rank_start_epoch=0,
    val_av_rank_hard_neg=30,
    val_av_rank_other_neg=30,
    dev_batch_size=12,
    val_av_rank_max_qs=10000,
    eval_every=500,
    checkpoint_every=500,
    keep_checkpoints=3,
    log_every=10,
)


def get_config():
    c = ml_collections.ConfigDict()
    c.objective = "distill"
    c.output_dir = "runs/umr_xor_retrieve"
    # mContriever: mBERT-cased, mean pooling; query and passage towers start from the same weights.
    # Queries at 256 tokens like the released --sequence_length 256 (only the batch's bucket is
    # padded to, so short questions cost no more than at 64).
    c.model = dict(init="", init_passage="", pooling="mean", separate_towers=True, dtype="bfloat16", query_max_length=256,
                   passage_max_length=256)
    # strip_question_mark: the released training drops one trailing "?" from each question (train
    # and dev); its retrieval and its reranker keep the question as it is, and so do ours.
    # pseudo_labels_format="released" reads the released reranker's rank*.json instead.
    c.data = dict(pseudo_labels="", dev_pseudo_labels="", pseudo_labels_format="umr-jax", top_k=100,
                  candidates_per_question=16, subset_size=0, dev_split=0, batch_by_language=False, strip_question_mark=True,
                  fixed_lengths=False)  # True: pad every batch to the max lengths (one compiled step)
    c.train = dict(RELEASED_TRAIN, steps=0, warmup_fraction=None, early_stopping_patience=0)  # the released length
    c.runtime = runtime_config()
    return c
