"""Stage 2 of UMR: distil a dual-encoder retriever from the LM's pseudo labels.

Per step: `questions_per_batch` questions (16 in the released run); for each, `candidates`
(16) of its top-k (100) LM-scored passages drawn at random; teacher = log_softmax(10 x LM
score) over the question's own candidates; student = log_softmax over the dot products with
every passage of the global batch (16 x 16 = 256 columns); loss = KL(teacher || student),
mean over questions. AdamW with linear warm-up and decay, gradient-norm clipping, dropout,
gradient caching for large global batches (configs/umr_xor_retrieve.py states the released
recipe in these terms). The best retriever is chosen on held-out pseudo labels
(`dev_selection`: the released run's DPR average rank at epoch ends, or the rank of the
teacher's best candidate every `eval_every` steps) and exported as Hugging Face folders.

  umr-jax train --config umr_xor_retrieve data.pseudo_labels=runs/it0/pseudo_labels
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from umr_jax import storage
from umr_jax.data import formats
from umr_jax.data.batches import EpochBatches, batch_buckets, pad_rows
from umr_jax.data.files import expand_shards
from umr_jax.data.subsets import held_out_indices, nested_subset
from umr_jax.errors import InputError
from umr_jax.training import common
from umr_jax.training.losses import umr_distillation_loss

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


PSEUDO_LABEL_FORMATS = ("umr-jax", "released")


def pseudo_label_files(path: str | Path) -> list[Path]:
    """A pseudo-label file, shard set, or folder of `*.jsonl` shards (sorted); gs:// too."""
    path = storage.fetch(path)
    if path.is_dir():
        files = sorted(p for p in path.glob("*.jsonl") if not p.name.startswith((".", "_")))
        if not files:
            raise InputError("no pseudo-label *.jsonl files in this folder", path)
        return files
    return expand_shards(path)


def strip_question_mark(question: str) -> str:
    """The question without one trailing ASCII "?", as the released UMR training feeds it to the
    query tower (`normalize_question` in its `data_utils.py`; full-width "？" and Arabic "؟" stay)."""
    return question[:-1] if question.endswith("?") else question


def _check_reranked(r, file: Path, number: int) -> None:
    """A record of the released reranker's file: ctxs sorted by LM score, every score a log-likelihood."""
    scores = [c.score for c in r.ctxs]
    if any(s > 0 for s in scores):
        raise InputError(f"record {number} (question {r.id!r}) has a score above 0, which no LM log-likelihood is: "
                         "this looks like a retriever's file; expected the released upr-multi.py's reranked output", file)
    if any(a < b for a, b in zip(scores, scores[1:])):
        raise InputError(f"record {number} (question {r.id!r}): ctxs are not sorted by score, highest first, as the "
                         "released upr-multi.py writes them; expected its reranked output", file)


def load_pseudo_labels(path: str | Path, top_k: int = 100, min_candidates: int = 1, *, file_format: str = "umr-jax",
                       strip_question: bool = False) -> list[ScoredQuestion]:
    """Read pseudo labels, keeping each question's first `top_k` candidates (JSON lines or one
    JSON list, told apart by the first character).

    `file_format` "umr-jax": what `umr-jax score` writes, ctxs[*].score = LM score and `scorer` =
    the LM. A record without `scorer` is a plain retrieval result, whose scores are the
    retriever's own: distilling from them would teach the retriever nothing, so it is refused.
    "released": the released UMR reranker's output (`upr-multi.py`'s `rank*.json`): no `scorer`,
    ctxs sorted by LM score (the retriever's score overwritten); each record is checked to be
    sorted with every score <= 0. `strip_question` drops one trailing "?" from every question
    (`strip_question_mark`), as the released training does."""
    if file_format not in PSEUDO_LABEL_FORMATS:
        raise InputError(f"unknown pseudo-label format {file_format!r}; expected one of {', '.join(PSEUDO_LABEL_FORMATS)}")
    out = []
    for file in pseudo_label_files(path):
        read = formats.read_dpr_json if formats.first_char(file) == "[" else formats.read_retrieval
        for number, r in enumerate(read(file), start=1):
            if file_format == "released":
                _check_reranked(r, file, number)
            elif r.scorer is None:
                raise InputError(f"record {number} (question {r.id!r}) has no 'scorer': this is a retrieval file whose scores "
                                 "are the retriever's, not pseudo labels; expected LM-scored pseudo labels, which come from "
                                 "`umr-jax score --run FILE --output DIR` (then data.pseudo_labels=DIR), or the released "
                                 "reranker's output with data.pseudo_labels_format=released", file)
            ctxs = r.ctxs[:top_k]
            if len(ctxs) < min_candidates:
                raise InputError(f"question {r.id!r} has {len(ctxs)} scored candidates, need at least {min_candidates}", file)
            out.append(ScoredQuestion(
                r.id, strip_question_mark(r.question) if strip_question else r.question, r.lang,
                tuple(c.title for c in ctxs), tuple(c.text for c in ctxs),
                np.asarray([c.score for c in ctxs], np.float32),
            ))
    if not out:
        raise InputError("no questions in the pseudo labels; expected at least one scored question to train on", path)
    return out


class DistillBatches(EpochBatches):
    """Deterministic, resumable global batches of (question, sampled candidates).

    Epoch e visits the questions in the order of a permutation seeded by (seed, e), drops the
    last incomplete batch, and draws each question's candidates with a generator seeded by
    (seed, e, question index): the state is just (epoch, position). Every process builds the
    same global batch and keeps its own rows (questions and their candidates); see
    `data.batches.EpochBatches`.
    """

    def __init__(self, questions: Sequence[ScoredQuestion], tokenizer, *, questions_per_batch: int, candidates: int,
                 seed: int, query_max_length: int = 64, passage_max_length: int = 256,
                 process_index: int | None = None, process_count: int | None = None, fixed_lengths: bool = False,
                 by_language: bool = False):
        super().__init__(questions, tokenizer, examples_per_batch=questions_per_batch, passages_per_example=candidates,
                         seed=seed, query_max_length=query_max_length, passage_max_length=passage_max_length,
                         process_index=process_index, process_count=process_count, fixed_lengths=fixed_lengths,
                         noun="questions", batch_name="questions_per_batch",
                         languages=np.array([q.lang for q in questions]) if by_language else None)
        self.questions, self.q, self.c = questions, questions_per_batch, candidates

    def build_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        queries, titles, texts = [], [], []
        scores = np.zeros((self.q, self.c), np.float32)
        valid = np.zeros((self.q, self.c), bool)
        for row, qi in enumerate(indices):
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
        q_tok = self.query_tokens(queries)
        p_tok = self.tokenizer(titles, texts, max_length=self.passage_max_length, truncation="only_second")["input_ids"]
        q_ids, q_mask = self.padded(q_tok, self.query_buckets)
        p_ids, p_mask = self.padded(p_tok, self.passage_buckets)
        return {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids, "passage_mask": p_mask,
                "lm_scores": scores, "candidate_mask": valid}


class TeacherRankMetrics:
    """Unsupervised dev metrics: for each question, the rank (1 = best) under the student of the
    teacher's best candidate, averaged; and the top-1 agreement between student and teacher.

    The questions and candidates are tokenized once, when this is built, and padded to one
    length each (the bucket of the longest), so every evaluation of a run reuses the same two
    compiled encoders and feeds them full batches: `query_batch` questions, and the candidates
    of as many questions as fit in `passage_batch` rows.
    """

    def __init__(self, setup: common.DualEncoderSetup, questions: Sequence[ScoredQuestion], *, query_max_length: int,
                 passage_max_length: int, encode_fn=None, query_batch: int = 64, passage_batch: int = 256):
        if not questions:
            raise ValueError("teacher rank metrics need at least one question")
        self.encode_q, self.encode_p = encode_fn or jitted_encoders(setup.module)
        tok, pad = setup.tokenizer, setup.tokenizer.pad_token_id
        q_tok = tok([q.question for q in questions], max_length=query_max_length, truncation=True)["input_ids"]
        titles = [t for q in questions for t in q.titles]
        texts = [t for q in questions for t in q.texts]
        p_tok = tok(titles, texts, max_length=passage_max_length, truncation="only_second")["input_ids"]
        q_buckets, p_buckets = batch_buckets(query_max_length, passage_max_length)
        q_len, p_len = q_buckets.padded(max(map(len, q_tok))), p_buckets.padded(max(map(len, p_tok)))
        self.q_ids, self.q_mask = pad_rows(q_tok, q_len, pad)
        self.p_ids, self.p_mask = pad_rows(p_tok, p_len, pad)
        self.sizes = np.array([len(q.scores) for q in questions])
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.best = np.array([int(np.argmax(q.scores)) for q in questions])
        self.query_batch = query_batch
        self.passage_batch = max(passage_batch, int(self.sizes.max()))

    @staticmethod
    def _encode(encode, params, ids: np.ndarray, mask: np.ndarray, rows: int) -> np.ndarray:
        """Embeddings of every row, `rows` at a time (the last batch padded to full size)."""
        out = []
        for start in range(0, len(ids), rows):
            chunk_ids, chunk_mask = ids[start : start + rows], mask[start : start + rows]
            n = len(chunk_ids)
            if n < rows:
                chunk_ids = np.concatenate([chunk_ids, np.repeat(chunk_ids[:1], rows - n, axis=0)])
                chunk_mask = np.concatenate([chunk_mask, np.repeat(chunk_mask[:1], rows - n, axis=0)])
            out.append(np.asarray(encode(params, chunk_ids, chunk_mask))[:n])
        return np.concatenate(out).astype(np.float64)

    def __call__(self, params: Any) -> dict[str, float]:
        q = self._encode(self.encode_q, params, self.q_ids, self.q_mask, min(self.query_batch, len(self.q_ids)))
        p = self._encode(self.encode_p, params, self.p_ids, self.p_mask, min(self.passage_batch, len(self.p_ids)))
        ranks, agree = [], []
        for i, best in enumerate(self.best):
            student = p[self.offsets[i] : self.offsets[i + 1]] @ q[i]
            ranks.append(1 + int(np.sum(student > student[best])))
            agree.append(float(np.argmax(student) == best))
        return {"teacher_best_mean_rank": float(np.mean(ranks)), "teacher_student_top1_agreement": float(np.mean(agree))}


def distillation_loss(t):
    """`loss_on_embeddings(q, p, batch)` of the config's `train` section (UMR's KL distillation)."""

    def loss_on_embeddings(q, p, batch):
        return umr_distillation_loss(q, p, batch["lm_scores"], temperature=t.temperature, student_scale=t.student_scale,
                                     candidate_mask=batch["candidate_mask"])

    return loss_on_embeddings


def jitted_encoders(module):
    @jax.jit
    def encode_q(params, ids, mask):
        return module.apply({"params": params}, ids, mask, method="encode_queries")

    @jax.jit
    def encode_p(params, ids, mask):
        return module.apply({"params": params}, ids, mask, method="encode_passages")

    return encode_q, encode_p


def dev_selection_of(t, setup: common.DualEncoderSetup, dev: Sequence[ScoredQuestion], steps_per_epoch: int, m,
                     encoders) -> tuple[Any, str, Any]:
    """(dev metrics or None, the metric that selects, a schedule factory or None) for the config's
    `train.dev_selection` (`dev_selection` module): "average_rank", the released run's criterion
    and schedule (`train.eval_per_epoch`, `val_av_rank_*`, `dev_batch_size`), or
    "teacher_best_rank" (the default), ours every `train.eval_every` steps."""
    from umr_jax.training import dev_selection

    how = t.get("dev_selection", "teacher_best_rank")
    if how not in dev_selection.DEV_SELECTIONS:
        raise InputError(f"train.dev_selection={how!r}; expected one of {', '.join(dev_selection.DEV_SELECTIONS)}")
    if how == "teacher_best_rank":
        metrics = TeacherRankMetrics(setup, dev, query_max_length=m.query_max_length,
                                     passage_max_length=m.passage_max_length, encode_fn=encoders) if dev else None
        return metrics, "teacher_best_mean_rank", None
    metrics = dev_selection.AverageRankMetrics(
        setup, dev, query_max_length=m.query_max_length, passage_max_length=m.passage_max_length,
        hard_negatives=t.get("val_av_rank_hard_neg", 30), other_negatives=t.get("val_av_rank_other_neg", 30),
        dev_batch_size=t.get("dev_batch_size", 12), max_questions=t.get("val_av_rank_max_qs", 10000),
        encode_fn=encoders) if dev else None
    eval_per_epoch, start_epoch = t.get("eval_per_epoch", 4), t.get("val_av_rank_start_epoch", 0)
    return metrics, "average_rank", lambda total: dev_selection.EpochEnds(steps_per_epoch, eval_per_epoch, start_epoch, total)


def train(config, *, output_dir: str | Path | None = None, runtime=None, resume_anyway: bool = False,
          progress=None) -> dict[str, Any]:
    """Run stage 2 from a config (see configs/umr_xor_retrieve.py) on `runtime`'s train mesh
    (default: the config's). Resumes from the latest checkpoint in `output_dir/checkpoints`, if
    it was made with the same config (or with `resume_anyway`; see
    `runner.RESUMABLE_WITH_CHANGES`). Returns a summary with the exported folders."""
    from umr_jax.runtime import Runtime

    output = storage.local(output_dir or config.output_dir)  # a gs:// run: its local mirror
    runtime = runtime or Runtime.from_config(config)
    config = common.resolved_config(config, output, runtime)  # what config.json and the checkpoints hold
    common.check_resume(output, config, resume_anyway=resume_anyway)
    mesh, rules = runtime.mesh_and_rules("train")
    m, d, t = config.model, config.data, config.train
    setup = common.build_dual_encoder(m.init, separate_towers=m.separate_towers, pooling=m.get("pooling") or None,
                                      dtype=m.dtype, dropout=t.dropout, similarity="dot", scale=1.0,
                                      passage_folder=m.get("init_passage") or None, scan_layers=bool(m.get("scan_layers", False)),
                                      remat=m.get("remat", "none"))
    labels = dict(top_k=d.top_k, file_format=d.get("pseudo_labels_format", "umr-jax"),
                  strip_question=bool(d.get("strip_question_mark", False)))
    seed, held_out = d.get("subset_seed", t.seed), int(d.get("dev_split") or 0)
    if held_out and d.get("dev_pseudo_labels"):
        raise InputError("data.dev_split and data.dev_pseudo_labels both name dev questions; give one")
    scored = load_pseudo_labels(d.pseudo_labels, **labels)
    questions = nested_subset(scored, d.get("subset_size"), seed, noun="questions", held_out=held_out)
    if held_out:  # questions no subset holds (`subsets.held_out_indices`)
        dev = [scored[int(i)] for i in held_out_indices(len(scored), held_out, seed)]
    else:
        dev = load_pseudo_labels(d.dev_pseudo_labels, **labels) if d.get("dev_pseudo_labels") else []
    del scored
    batches = DistillBatches(questions, setup.tokenizer, questions_per_batch=t.questions_per_batch,
                             candidates=d.candidates_per_question, seed=t.seed,
                             query_max_length=m.query_max_length, passage_max_length=m.passage_max_length,
                             fixed_lengths=bool(d.get("fixed_lengths", False)), by_language=bool(d.get("batch_by_language")))
    encoders = jitted_encoders(setup.module)
    loss_on_embeddings = distillation_loss(t)
    dev_metrics, selection_metric, schedule = dev_selection_of(t, setup, dev, batches.steps_per_epoch, m, encoders)

    steps = common.total_steps_of(t, batches.steps_per_epoch)
    return common.run_dual_encoder_training(
        config=config, setup=setup, batches=batches, loss_on_embeddings=loss_on_embeddings,
        queries_per_batch=t.questions_per_batch, passages_per_batch=t.questions_per_batch * d.candidates_per_question,
        warmup_steps=common.warmup_steps_of(t, steps, t.warmup_steps), output=output, mesh=mesh, rules=rules,
        dev_metrics=dev_metrics, selection_metric=selection_metric, dev_schedule=schedule, resume_anyway=resume_anyway,
        progress=progress,
    )
