"""The evaluate stage: XOR-Retrieve R@2kt / R@5kt of a run file against XOR-TyDi gold answers,
exactly as the official script counts them (`evaluation.xor`), written as a JSON report by the
writing process, with every counted question's outcome beside it.

    eval.json                   the report (`XorRetrieveReport.to_json`, plus the tokenizer)
    eval.per_question.jsonl     one line per counted prediction, in prediction order:
                                {"id", "lang", "r@2kt": true|false, "r@5kt": true|false}

The per-question file is written first, so a report whose eval.json exists has it (reports made
before it was recorded do not); the scaling study resamples these lines to put question-level
intervals on every point (`umr_jax.scaling.resample`).
"""

from __future__ import annotations

import os
from pathlib import Path

from umr_jax import storage
from umr_jax.data import formats
from umr_jax.data.files import atomic_write_bytes, json_dumps
from umr_jax.stages.folder import write_json

PER_QUESTION_SUFFIX = ".per_question.jsonl"


def per_question_path(output: str | os.PathLike) -> str | Path:
    """The per-question file of the report `output`: `eval.json` -> `eval.per_question.jsonl`
    (same folder; a `str` stays a `str`, so a gs:// URL keeps its form)."""
    text = os.fspath(output)
    stem = text.removesuffix(".json")
    return Path(stem + PER_QUESTION_SUFFIX) if isinstance(output, Path) else stem + PER_QUESTION_SUFFIX


def xor_retrieve(run: str | os.PathLike, gold: str | os.PathLike, output: str | os.PathLike, runtime, *,
                 tokenizer: str = "nltk") -> dict:
    """R@kt of the retrieval results in `run` (JSON lines); returns the report, also written to
    `output` (every process gets it), and every counted question's outcome to
    `per_question_path(output)` (written before `output`, each atomically)."""
    from umr_jax.evaluation.readers import read_xor_gold_answers
    from umr_jax.evaluation.xor import word_tokenizer, xor_retrieve_r_at_kt

    answers = read_xor_gold_answers(gold)
    predictions = (formats.retrieval_to_xor_prediction(r) for r in formats.read_retrieval(run))
    result = xor_retrieve_r_at_kt(answers, predictions, word_tokenizer(tokenizer))
    report = result.to_json()
    report["tokenizer"] = tokenizer
    if runtime.is_writer:
        lines = "".join(json_dumps(outcome.to_json()) + "\n" for outcome in result.per_question)
        atomic_write_bytes(per_question_path(output), lambda f: f.write(lines.encode("utf-8")))
        write_json(output, report)
    runtime.barrier(f"umr-jax-evaluate-{storage.location(output)}")
    return report
