"""The released UMR training recipe, pinned: five steps of our distillation under
configs/umr_xor_retrieve.py against a PyTorch re-implementation of the released
train_dense_encoder_with_llm.py step (MiuLab/UMR), written here.

The re-implementation covers what the released step does around the loss: gradient caching
(every chunk's embeddings without grad, the in-batch KL loss and its gradient on the
embeddings, then each chunk re-encoded and the surrogate `dot(reps, grad) * distributed_factor
/ 8` back-propagated, one process: 1/8), the fp32 clip at `--max_grad_norm 2.0` on that
1/8-scaled gradient (`clip_grad_norm_`; the fp16 GradScaler's unscale is exact and left out),
transformers.AdamW (eps 1e-8 added before the bias correction, weight decay 0) and DPR's linear
warm-up/decay (`get_schedule_linear` in a LambdaLR). Ours runs the same five steps with
`distill.train`, whose config states the same recipe in true-gradient units (clip 16, eps 8e-8).

Dropout is off in both (train.dropout=0, torch modules in eval mode): the two frameworks draw
different masks. Both read the same batches (our batcher's; the released code samples with
Python's `random`, a deliberate difference) in float32.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from umr_jax.config import load_config
from umr_jax.data import formats
from umr_jax.training import distill

# The released command's --max_grad_norm is 2.0, which ours states as 16 (8x, the config's
# derivation). This tiny model's true gradient norms are 4.6 to 7.6, where 16 never binds, so
# the test sets the released threshold to 0.75 and ours to 8 x 0.75 = 6, which binds in some
# steps and not in others: the factor 8 between the two is what is pinned.
LEARNING_RATE, WARMUP, STEPS, RELEASED_CLIP = 3e-3, 2, 5, 0.75


@pytest.fixture(scope="module")
def labels(tmp_path_factory):
    """16 train and 4 dev questions, 4 candidates each, with a steep teacher (large gradients)."""
    rng = np.random.default_rng(7)
    from umr_jax.demo import demo_paths

    passages = list(formats.read_dpr_passages(demo_paths()["passages"]))[:200]
    questions = list(formats.read_questions(demo_paths()["train_questions"]))[:20]
    results = []
    for q in questions:
        picks = rng.choice(len(passages), 4, replace=False)
        scores = np.sort(-rng.random(4) * 6)[::-1]
        ctxs = tuple(formats.Context(passages[i].id, passages[i].title, passages[i].text, float(s)) for i, s in zip(picks, scores))
        results.append(formats.RetrievalResult(q.id, q.question.rstrip("?") + "?", q.lang, ctxs, scorer="synthetic"))
    folder = tmp_path_factory.mktemp("recipe")
    formats.write_retrieval(folder / "train.jsonl", results[:16])
    formats.write_retrieval(folder / "dev.jsonl", results[16:])
    return folder


def _released_config(retriever, labels, output, **train):
    overrides = [f"model.init={retriever}", "model.dtype=float32", "model.query_max_length=32", "model.passage_max_length=64",
                 f"data.pseudo_labels={labels / 'train.jsonl'}", f"data.dev_pseudo_labels={labels / 'dev.jsonl'}",
                 "data.candidates_per_question=4", "train.questions_per_batch=8", "train.epochs=2.5",
                 f"train.warmup_steps={WARMUP}", f"train.learning_rate={LEARNING_RATE}", "train.dropout=0.0",
                 "train.query_chunk=8", "train.passage_chunk=8", "train.eval_per_epoch=2", "data.fixed_lengths=True", "train.log_every=1",
                 f"train.grad_clip_norm={8 * RELEASED_CLIP}", f"output_dir={output}"]
    overrides += [f"train.{k}={v}" for k, v in train.items()]
    return load_config("configs/umr_xor_retrieve.py", overrides)


def _mean_pool(model, ids, mask):
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    return (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


def _in_batch_kl(q, p, lm_scores, temperature):
    """The released BiEncoderInBatchKLLoss: teacher log_softmax(10 x score) on the question's own
    columns, -1000 elsewhere; KL(teacher || student) with 'batchmean'."""
    batch, n = lm_scores.shape
    scores = q @ p.T
    teacher = torch.full_like(scores, -1000.0)
    own = torch.log_softmax(lm_scores * temperature, dim=1)
    for i in range(batch):
        teacher[i, i * n:(i + 1) * n] = own[i]
    return torch.nn.functional.kl_div(torch.log_softmax(scores, dim=1), teacher, reduction="batchmean", log_target=True)


def _released_run(folder, batches, *, clip, total_steps, temperature=10.0, q_chunk=8, ctx_chunk=8):
    """The released loop for len(batches) steps on two towers loaded from `folder`: (towers, true grad norms)."""
    from transformers import AutoModel

    torch.manual_seed(0)
    towers = {name: AutoModel.from_pretrained(folder, attn_implementation="eager").float().eval() for name in ("query", "passage")}
    params = [p for t in towers.values() for p in t.parameters()]
    state = {p: (torch.zeros_like(p), torch.zeros_like(p)) for p in params}
    b1, b2, eps = 0.9, 0.999, 1e-8
    norms = []
    for k, batch in enumerate(batches):
        t = {key: torch.from_numpy(np.asarray(v)) for key, v in batch.items()}
        sides = {"query": (t["query_ids"].long(), t["query_mask"].long(), q_chunk),
                 "passage": (t["passage_ids"].long(), t["passage_mask"].long(), ctx_chunk)}
        with torch.no_grad():
            reps = {name: torch.cat([_mean_pool(towers[name], i, m) for i, m in zip(ids.split(c), mask.split(c))])
                    for name, (ids, mask, c) in sides.items()}
        q = reps["query"].detach().requires_grad_()
        p = reps["passage"].detach().requires_grad_()
        _in_batch_kl(q, p, t["lm_scores"].float(), temperature).backward()
        for name, grad in (("query", q.grad), ("passage", p.grad)):
            ids, mask, c = sides[name]
            for i, m, g in zip(ids.split(c), mask.split(c), grad.split(c)):
                surrogate = torch.dot(_mean_pool(towers[name], i, m).flatten().float(), g.flatten())
                (surrogate * (1 / 8.0)).backward()  # distributed_factor / 8 with one process
        norms.append(8 * math.sqrt(sum(float((x.grad**2).sum()) for x in params if x.grad is not None)))
        torch.nn.utils.clip_grad_norm_(params, clip)
        lr = LEARNING_RATE * (k / max(1, WARMUP) if k < WARMUP else max(0.0, (total_steps - k) / max(1, total_steps - WARMUP)))
        with torch.no_grad():  # transformers.AdamW, correct_bias=True, weight decay 0
            for x in params:
                if x.grad is None:
                    continue
                m, v = state[x]
                m.mul_(b1).add_(x.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(x.grad, x.grad, value=1 - b2)
                step = k + 1
                step_size = lr * math.sqrt(1 - b2**step) / (1 - b1**step)
                x.addcdiv_(m, v.sqrt().add_(eps), value=-step_size)
                x.grad = None
    return towers, norms


# The passage tower's last LayerNorm bias adds one vector c to every passage embedding, which
# moves each query's scores by the same q.c and leaves every softmax, so the loss, unchanged: its
# true gradient is 0. Adam scales the float rounding left in it (~1e-9) to full-size steps, so
# its value after 5 steps is noise in either framework and is not compared.
ZERO_GRADIENT = {"passage": "encoder.layer.1.output.LayerNorm.bias"}


def _max_difference(ours_folder, torch_tower, tower="query"):
    from transformers import AutoModel

    ours = dict(AutoModel.from_pretrained(ours_folder).named_parameters())
    theirs = dict(torch_tower.named_parameters())
    common = [n for n in theirs if n in ours and not n.startswith("pooler.") and n != ZERO_GRADIENT.get(tower)]
    assert len(common) > 10
    return max(float((ours[n] - theirs[n]).abs().max()) for n in common)


def test_five_steps_equal_the_released_recipe_in_pytorch(tiny_retriever, labels, tmp_path):
    released = load_config("configs/umr_xor_retrieve.py")
    assert (released.train.grad_clip_norm, released.train.adam_eps, released.data.strip_question_mark) == (8 * 2.0, 8 * 1e-8, True)
    config = _released_config(tiny_retriever, labels, tmp_path / "run")
    summary = distill.train(config)
    assert summary["steps"] == STEPS

    # The batches our run drew (our batcher, the config's seed), read again for the reference.
    from umr_jax.models import hf_io

    questions = distill.load_pseudo_labels(labels / "train.jsonl", strip_question=True)
    assert all(not q.question.endswith("?") for q in questions)
    batcher = distill.DistillBatches(questions, hf_io.load_tokenizer(tiny_retriever), questions_per_batch=8, candidates=4,
                                     seed=config.train.seed, query_max_length=32, passage_max_length=64,
                                     process_index=0, process_count=1, fixed_lengths=True)
    batches = [next(batcher) for _ in range(STEPS)]
    towers, norms = _released_run(tiny_retriever, batches, clip=RELEASED_CLIP, total_steps=STEPS)
    # The clip binds in some steps and not in others, so its threshold is pinned from both sides.
    assert min(norms) < 8 * RELEASED_CLIP < max(norms), norms
    logged = [r["grad_norm"] for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if r["split"] == "train"]
    np.testing.assert_allclose(logged, norms, rtol=1e-4)
    for name in ("query", "passage"):
        assert _max_difference(tmp_path / "run" / "final" / f"{name}_encoder", towers[name], name) < 1e-5

    # The clip of the exact gradient at the released command's 2.0 (8x tighter) is another recipe.
    naive, _ = _released_run(tiny_retriever, batches, clip=RELEASED_CLIP / 8, total_steps=STEPS)
    assert _max_difference(tmp_path / "run" / "final" / "query_encoder", naive["query"]) > 1e-4

    # Checkpoint selection as released: measured every step here (2 steps per epoch, 2 per
    # epoch), eligible only at epoch ends (steps 2 and 4) and the last step.
    dev = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if r["split"] == "dev"]
    assert [r["step"] for r in dev] == [0, 1, 2, 3, 4, 5]
    assert all(r["average_rank_questions"] == 8 for r in dev)  # 4 questions, their dev batch of 12 completed with repeats
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    eligible = {r["step"]: r["average_rank"] for r in dev if r["step"] in (2, 4, 5)}
    assert best["step"] == min(eligible, key=lambda s: (eligible[s], s))
