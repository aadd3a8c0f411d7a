"""Stage 2 of UMR: distil a dual-encoder retriever from the LM's pseudo labels.

Per step: `questions_per_batch` questions (16 in the released run); for each, `candidates`
(16) of its top-k (100) LM-scored passages drawn at random; teacher = log_softmax(10 x LM
score) over the question's own candidates; student = log_softmax over the dot products with
every passage of the global batch (16 x 16 = 256 columns); loss = KL(teacher || student),
mean over questions. AdamW with linear warm-up and decay, gradient-norm clipping, dropout,
gradient caching for large global batches. Every `eval_every` steps the student is scored on
held-out pseudo labels by the average rank of the teacher's best passage among the
candidates (lower is better, no gold labels needed), and the best retriever is exported as
Hugging Face folders.

  umr-jax train --config configs/umr_xor_retrieve.py data.pseudo_labels=runs/it0/pseudo_labels
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax.data import formats
from umr_jax.data.pipeline import LengthBuckets
from umr_jax.data.files import expand_shards
from umr_jax.errors import InputError
from umr_jax.parallel import sharding as shd
from umr_jax.parallel.checkpoint import Checkpointer
from umr_jax.training import common
from umr_jax.training.gradcache import grad_cached_value_and_grad, plain_value_and_grad
from umr_jax.training.losses import umr_distillation_loss
from umr_jax.training.runner import train_loop
from umr_jax.training.state import make_optimizer, make_train_step, state_from_params

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScoredQuestion:
    """One question with its LM-scored candidates (titles/texts as one string pair each)."""

    id: str
    question: str
    lang: str
    titles: tuple[str, ...]
    texts: tuple[str, ...]
    scores: np.ndarray  # fp32 [num_candidates]


def pseudo_label_files(path: str | Path) -> list[Path]:
    """A pseudo-label file, shard set, or folder of `*.jsonl` shards (sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if not p.name.startswith((".", "_")))
        if not files:
            raise InputError("no pseudo-label *.jsonl files in this folder", path)
        return files
    return expand_shards(path)


def load_pseudo_labels(path: str | Path, top_k: int = 100, min_candidates: int = 1) -> list[ScoredQuestion]:
    """Read pseudo labels (retrieval-result JSONL with ctxs[*].score = LM score), keeping each
    question's first `top_k` candidates."""
    out = []
    for file in pseudo_label_files(path):
        for r in formats.read_retrieval(file):
            ctxs = r.ctxs[:top_k]
            if len(ctxs) < min_candidates:
                raise InputError(f"question {r.id!r} has {len(ctxs)} scored candidates, need at least {min_candidates}", file)
            out.append(ScoredQuestion(
                r.id, r.question, r.lang, tuple(c.title for c in ctxs), tuple(c.text for c in ctxs),
                np.asarray([c.score for c in ctxs], np.float32),
            ))
    if not out:
        raise InputError("no questions in the pseudo labels", path)
    return out


class DistillBatches:
    """Deterministic, resumable global batches of (question, sampled candidates).

    Epoch e visits the questions in the order of a permutation seeded by (seed, e), drops the
    last incomplete batch, and draws each question's candidates with a generator seeded by
    (seed, e, question index): the state is just (epoch, position). Every process builds the
    same global batch and keeps its own rows (questions and their candidates).
    """

    def __init__(self, questions: Sequence[ScoredQuestion], tokenizer, *, questions_per_batch: int, candidates: int,
                 seed: int, query_max_length: int = 64, passage_max_length: int = 256,
                 process_index: int | None = None, process_count: int | None = None):
        if len(questions) < questions_per_batch:
            raise InputError(f"{len(questions)} questions cannot fill one batch of {questions_per_batch}")
        self.questions, self.tokenizer = questions, tokenizer
        self.q, self.c, self.seed = questions_per_batch, candidates, seed
        self.query_buckets = LengthBuckets.powers_of_two(query_max_length)
        self.passage_buckets = LengthBuckets.powers_of_two(passage_max_length, 32)
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        self.process_index = jax.process_index() if process_index is None else process_index
        self.process_count = jax.process_count() if process_count is None else process_count
        if questions_per_batch % self.process_count:
            raise ValueError(f"questions_per_batch {questions_per_batch} must divide over {self.process_count} processes")
        self.epoch, self.position = 0, 0
        self.pad_id = tokenizer.pad_token_id

    @property
    def steps_per_epoch(self) -> int:
        return len(self.questions) // self.q

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.questions))

    def global_batch(self) -> dict[str, np.ndarray]:
        """The next global batch (all processes' rows), advancing the state."""
        if self.position + self.q > len(self.questions):
            self.epoch, self.position = self.epoch + 1, 0
        chosen = self._order(self.epoch)[self.position : self.position + self.q]
        self.position += self.q
        queries, titles, texts = [], [], []
        scores = np.zeros((self.q, self.c), np.float32)
        valid = np.zeros((self.q, self.c), bool)
        for row, qi in enumerate(chosen):
            question = self.questions[qi]
            rng = np.random.default_rng([self.seed, self.epoch, int(qi)])
            picks = rng.permutation(len(question.scores))[: self.c]  # shuffle the scored candidates, take C
            queries.append(question.question)
            for slot in range(self.c):
                if slot < len(picks):
                    titles.append(question.titles[picks[slot]])
                    texts.append(question.texts[picks[slot]])
                    scores[row, slot] = question.scores[picks[slot]]
                    valid[row, slot] = True
                else:  # fewer candidates than C: padding slots are masked out of the loss
                    titles.append("")
                    texts.append("")
        q_tok = self.tokenizer(queries, max_length=self.query_max_length, truncation=True)["input_ids"]
        p_tok = self.tokenizer(titles, texts, max_length=self.passage_max_length, truncation="only_second")["input_ids"]
        q_len = self.query_buckets.padded(max(map(len, q_tok)))
        p_len = self.passage_buckets.padded(max(map(len, p_tok)))
        q_ids, q_mask = common.pad_rows(q_tok, q_len, self.pad_id)
        p_ids, p_mask = common.pad_rows(p_tok, p_len, self.pad_id)
        return {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids, "passage_mask": p_mask,
                "lm_scores": scores, "candidate_mask": valid}

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.global_batch()
        q_rows = self.q // self.process_count
        lo, hi = self.process_index * q_rows, (self.process_index + 1) * q_rows
        out = {}
        for key, value in batch.items():
            if key.startswith("passage"):
                out[key] = value[lo * self.c : hi * self.c]
            else:
                out[key] = value[lo:hi]
        return out


def teacher_rank_metrics(setup: common.DualEncoderSetup, params: Any, questions: Sequence[ScoredQuestion], *,
                         query_max_length: int, passage_max_length: int, encode_fn=None) -> dict[str, float]:
    """Unsupervised dev metrics: for each question, the rank (1 = best) under the student of the
    teacher's best candidate, averaged; and the top-1 agreement between student and teacher."""
    encode_q, encode_p = encode_fn or jitted_encoders(setup.module)
    tok = setup.tokenizer
    pad = tok.pad_token_id
    ranks, agree = [], []
    for question in questions:
        q_tok = tok([question.question], max_length=query_max_length, truncation=True)["input_ids"]
        p_tok = tok(list(question.titles), list(question.texts), max_length=passage_max_length, truncation="only_second")["input_ids"]
        q_ids, q_mask = common.pad_rows(q_tok, LengthBuckets.powers_of_two(query_max_length).padded(len(q_tok[0])), pad)
        p_ids, p_mask = common.pad_rows(p_tok, LengthBuckets.powers_of_two(passage_max_length, 32).padded(max(map(len, p_tok))), pad)
        q = np.asarray(encode_q(params, q_ids, q_mask))
        p = np.asarray(encode_p(params, p_ids, p_mask))
        student = (p.astype(np.float64) @ q[0].astype(np.float64))
        best = int(np.argmax(question.scores))
        ranks.append(1 + int(np.sum(student > student[best])))
        agree.append(float(np.argmax(student) == best))
    return {"teacher_best_mean_rank": float(np.mean(ranks)), "teacher_student_top1_agreement": float(np.mean(agree))}


def jitted_encoders(module):
    @jax.jit
    def encode_q(params, ids, mask):
        return module.apply({"params": params}, ids, mask, method="encode_queries")

    @jax.jit
    def encode_p(params, ids, mask):
        return module.apply({"params": params}, ids, mask, method="encode_passages")

    return encode_q, encode_p


def train(config, *, output_dir: str | Path | None = None, mesh=None, rules=None) -> dict[str, Any]:
    """Run stage 2 from a config (see configs/umr_xor_retrieve.py). Resumes from the latest
    checkpoint in `output_dir/checkpoints`. Returns a summary with the exported folders."""
    from umr_jax.config import mesh_and_rules

    output = Path(output_dir or config.output_dir)
    if mesh is None:
        mesh, rules = mesh_and_rules(config)
    m, d, t = config.model, config.data, config.train
    setup = common.build_dual_encoder(m.init, separate_towers=m.separate_towers, pooling=m.get("pooling") or None,
                                      dtype=m.dtype, dropout=t.dropout, similarity="dot", scale=1.0,
                                      passage_folder=m.get("init_passage") or None)
    questions = load_pseudo_labels(d.pseudo_labels, top_k=d.top_k)
    dev = load_pseudo_labels(d.dev_pseudo_labels, top_k=d.top_k) if d.get("dev_pseudo_labels") else []
    batches = DistillBatches(questions, setup.tokenizer, questions_per_batch=t.questions_per_batch,
                             candidates=d.candidates_per_question, seed=t.seed,
                             query_max_length=m.query_max_length, passage_max_length=m.passage_max_length)
    total_steps = max(1, int(math.ceil(t.epochs * batches.steps_per_epoch)))
    optimizer = make_optimizer(t.learning_rate, total_steps=total_steps, warmup_steps=t.warmup_steps,
                               weight_decay=t.weight_decay, eps=t.adam_eps, grad_clip_norm=t.grad_clip_norm)
    state, shardings = state_from_params(setup.params, common.boxed_abstract_params(setup.module), optimizer, mesh, rules)
    module = setup.module

    def enc_q(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_queries", rngs={"dropout": rng})

    def enc_p(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_passages", rngs={"dropout": rng})

    def loss_on_embeddings(q, p, batch):
        return umr_distillation_loss(q, p, batch["lm_scores"], temperature=t.temperature, student_scale=t.student_scale,
                                     candidate_mask=batch["candidate_mask"])

    n_passages = t.questions_per_batch * d.candidates_per_question
    make_vg = grad_cached_value_and_grad if t.grad_cache else plain_value_and_grad
    value_and_grad = make_vg(enc_q, enc_p, loss_on_embeddings,
                             query_chunk=min(t.query_chunk, t.questions_per_batch), passage_chunk=min(t.passage_chunk, n_passages))
    step = make_train_step(None, optimizer, mesh, shardings, shd.batch_sharding(mesh), rules, value_and_grad_fn=value_and_grad)
    metrics_log = common.MetricsLog(output)
    checkpointer = Checkpointer(output / "checkpoints", save_interval_steps=t.checkpoint_every, max_to_keep=t.keep_checkpoints)
    encoders = jitted_encoders(module)
    best = {"teacher_best_mean_rank": math.inf}
    best_file = output / "best.json"
    if best_file.is_file():
        import json

        best = json.loads(best_file.read_text())

    def evaluate(step_number: int, state_now) -> None:
        nonlocal best
        if not dev:
            return
        scores = teacher_rank_metrics(setup, state_now.params, dev, query_max_length=m.query_max_length,
                                      passage_max_length=m.passage_max_length, encode_fn=encoders)
        metrics_log.write(step_number, scores, prefix="dev")
        if scores["teacher_best_mean_rank"] < best["teacher_best_mean_rank"]:
            best = {"step": step_number, **scores}
            common.export_towers(output / "best", setup, state_now.params)
            if jax.process_index() == 0:
                from umr_jax.retrieval.embeddings import atomic_write_bytes
                import json

                data = json.dumps(best, indent=2).encode()
                atomic_write_bytes(best_file, lambda f: f.write(data))

    def on_metrics(step_number: int, metrics: dict) -> None:
        if step_number % t.log_every == 0 or step_number == total_steps:
            metrics_log.write(step_number, metrics)
            log.info("step %d/%d %s", step_number, total_steps, {k: round(v, 4) for k, v in metrics.items()})

    def on_step(step_number: int, state_now) -> None:
        if step_number % t.eval_every == 0 or step_number == total_steps:
            evaluate(step_number, state_now)

    if checkpointer.latest_step() is None:
        evaluate(0, state)  # the starting point, so "best" is never worse than the initial retriever
    state, reason = train_loop(
        state=state, state_shardings=shardings, train_step=step, data=batches,
        to_global=lambda b: shd.host_batch_to_global(b, mesh), total_steps=total_steps, checkpointer=checkpointer,
        rng=jax.random.PRNGKey(t.seed), config=config.to_dict(), on_metrics=on_metrics, on_step=on_step,
    )
    checkpointer.close()
    metrics_log.close()
    final = common.export_towers(output / "final", setup, state.params) if reason == "done" else None
    return {"reason": reason, "steps": int(state.step), "total_steps": total_steps, "best": best,
            "best_dir": str(output / "best") if dev else None, "final_dir": str(output / "final") if final else None}
