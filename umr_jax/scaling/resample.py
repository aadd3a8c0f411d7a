"""The question-level paired bootstrap of a scaling study.

XOR dev has a few hundred questions per language, so one point's R@kt carries a sampling error
of a point or more: the same order as the gain per 10x that decides whether returns flatten. The
honest interval resamples the *questions*: draw the dev questions again with replacement
(within each language, so every language keeps its number of questions, as the benchmark fixes
them), recompute every point's R@kt on that draw, refit every source. The same draw serves every
point and every source, so differences between sources are paired.

A point's outcomes are the evaluate stage's `eval.per_question.jsonl`
(`umr_jax.stages.evaluate`): one line per counted prediction, `{"id", "lang", "r@2kt": bool,
"r@5kt": bool}`. R@kt per language is hits / counted x 100 over those lines, the average the
mean over the point's languages, exactly as eval.json (checked against it by the report).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data.reading import iter_jsonl
from umr_jax.errors import InputError

_METRIC = re.compile(r"^r@(\d+)kt\.([^.]+)$")


def question_metric(metric: str) -> tuple[str, str] | None:
    """("r@5kt", "average") for "r@5kt.average", ("r@2kt", "ja") for "r@2kt.ja"; None for a
    metric the per-question files cannot recompute."""
    match = _METRIC.match(metric)
    return None if match is None else (f"r@{match.group(1)}kt", match.group(2))


@dataclasses.dataclass(frozen=True)
class PointOutcomes:
    """One point's counted predictions: ids, languages and hits for one R@kt, `[records]`."""

    ids: tuple[str, ...]
    langs: tuple[str, ...]
    hits: np.ndarray
    path: str


def read_outcomes(path: str | os.PathLike, table: str) -> PointOutcomes | None:
    """The `table` ("r@5kt") outcomes of a per-question file; None when the file does not exist.

    Raises InputError naming the file and line for a line that is not an outcome."""
    local = storage.local(path)
    if not local.is_file():
        return None
    ids, langs, hits = [], [], []
    for name, line, record in iter_jsonl(local):
        if isinstance(record, InputError):  # a line that is not JSON: its RecordError names file and line
            raise record
        qid, lang, hit = record.get("id"), record.get("lang"), record.get(table)
        if not isinstance(qid, str) or not isinstance(lang, str) or not isinstance(hit, bool):
            raise InputError(f'expected {{"id": str, "lang": str, "{table}": true|false}}, got {sorted(record)}', name, line)
        ids.append(qid)
        langs.append(lang)
        hits.append(hit)
    return PointOutcomes(tuple(ids), tuple(langs), np.array(hits, dtype=bool), str(local))


@dataclasses.dataclass(frozen=True)
class QuestionBootstrap:
    """Every point's score recomputed on the same question resamples.

    observed: `[points]`, the score of each point on all its questions (eval.json's number).
    replicates: `[resamples, points]`; rows where some point had no question of a language it
      needs are dropped (for all points alike, so rows stay paired).
    questions: distinct question ids over all points; languages: lang -> questions of it.
    """

    observed: np.ndarray
    replicates: np.ndarray
    questions: int
    languages: dict[str, int]


def question_bootstrap(points: Sequence[PointOutcomes], lang: str = "average", *, samples: int = 1000,
                       seed: int = 0) -> QuestionBootstrap:
    """Resample the questions of all `points` (stratified by language) `samples` times and give
    every point's R@kt per resample: one language's (`lang` a code) or the mean over the point's
    languages (`lang="average"`). Deterministic for a seed."""
    if not points:
        raise ValueError("no points to resample")
    index: dict[str, int] = {}
    question_lang: list[str] = []
    for point in points:
        for qid, qlang in zip(point.ids, point.langs):
            if qid not in index:
                index[qid] = len(question_lang)
                question_lang.append(qlang)
    n_questions = len(question_lang)
    counted = np.zeros((len(points), n_questions))
    hit = np.zeros((len(points), n_questions))
    for row, point in enumerate(points):
        columns = np.array([index[qid] for qid in point.ids], dtype=np.int64)
        np.add.at(counted[row], columns, 1.0)
        np.add.at(hit[row], columns, point.hits.astype(np.float64))
    languages = list(dict.fromkeys(question_lang))
    if lang != "average" and lang not in languages:
        raise InputError(f"no question of language {lang!r} in the per-question files (languages: {', '.join(languages)})")
    langs_used = languages if lang == "average" else [lang]
    question_lang_arr = np.array(question_lang)
    rng = np.random.default_rng(seed)
    weights = np.zeros((samples, n_questions))
    for code in languages:  # every language drawn, whatever `lang` is, so the stream does not depend on it
        columns = np.flatnonzero(question_lang_arr == code)
        draws = rng.integers(0, columns.size, (samples, columns.size))
        np.add.at(weights, (np.repeat(np.arange(samples), columns.size), columns[draws.ravel()]), 1.0)

    def scores(w: np.ndarray) -> np.ndarray:
        per_lang = []
        for code in langs_used:
            columns = question_lang_arr == code
            num = w[:, columns] @ hit[:, columns].T
            den = w[:, columns] @ counted[:, columns].T
            with np.errstate(invalid="ignore", divide="ignore"):
                per_lang.append(np.where(den > 0, num / den * 100.0, np.nan))
        stack = np.stack(per_lang)                       # [langs, rows, points]
        present = np.isfinite(stack)
        total = np.where(present, stack, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(present.any(axis=0), total / present.sum(axis=0), np.nan)

    observed = scores(np.ones((1, n_questions)))[0]
    replicates = scores(weights)
    # A resample that leaves a point without any question of a language it had changes which
    # languages that point averages: drop it, for every point (rows stay paired).
    full_present = np.stack([(counted[:, question_lang_arr == code].sum(axis=1) > 0) for code in langs_used])
    keep = np.ones(samples, dtype=bool)
    for i, code in enumerate(langs_used):
        columns = question_lang_arr == code
        den = weights[:, columns] @ counted[:, columns].T
        keep &= np.all((den > 0) | ~full_present[i][None, :], axis=1)
    return QuestionBootstrap(observed=observed, replicates=replicates[keep], questions=n_questions,
                             languages={code: int(np.sum(question_lang_arr == code)) for code in languages})
