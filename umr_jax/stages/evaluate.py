"""The evaluate stage: XOR-Retrieve R@2kt / R@5kt of a run file against XOR-TyDi gold answers,
exactly as the official script counts them (`evaluation.xor`), written as a JSON report by the
writing process."""

from __future__ import annotations

import os
from pathlib import Path

from umr_jax.data import formats
from umr_jax.stages.folder import write_json


def xor_retrieve(run: str | os.PathLike, gold: str | os.PathLike, output: str | os.PathLike, runtime, *,
                 tokenizer: str = "nltk") -> dict:
    """R@kt of the retrieval results in `run` (JSON lines); returns the report, also written to
    `output` (every process gets it)."""
    from umr_jax.evaluation.readers import read_xor_gold_answers
    from umr_jax.evaluation.xor import word_tokenizer, xor_retrieve_r_at_kt

    answers = read_xor_gold_answers(gold)
    predictions = (formats.retrieval_to_xor_prediction(r) for r in formats.read_retrieval(run))
    report = xor_retrieve_r_at_kt(answers, predictions, word_tokenizer(tokenizer)).to_json()
    report["tokenizer"] = tokenizer
    if runtime.is_writer:
        write_json(output, report)
    runtime.barrier(f"umr-jax-evaluate-{Path(output)}")
    return report
