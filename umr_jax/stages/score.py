"""The score stage (stage 1): pseudo labels for a run file by question likelihood under a
frozen T5/mT5, on the runtime's `score` role (every host's devices; see `labeling.run` for the
folder and how it resumes)."""

from __future__ import annotations

import os

from umr_jax.labeling.run import score_retrieved
from umr_jax.labeling.scorer import QuestionLikelihoodScorer


def load_scorer(model: str | os.PathLike, runtime, *, dtype: str = "bfloat16", reduction: str = "mean",
                max_source_length: int = 512, max_target_length: int = 128, tokens_per_batch: int = 16384,
                vocab_chunk_size: int | None = None) -> QuestionLikelihoodScorer:
    """The scorer, its parameters sharded over the `score` mesh (load once, score many files)."""
    options = {} if vocab_chunk_size is None else {"vocab_chunk_size": vocab_chunk_size}
    return QuestionLikelihoodScorer(model, mesh=runtime.mesh("score"), rules=runtime.rules("score"), dtype=dtype,
                                    reduction=reduction, max_source_length=max_source_length,
                                    max_target_length=max_target_length, tokens_per_batch=tokens_per_batch, **options)


def score(retrieved: str | os.PathLike, output: str | os.PathLike, scorer: QuestionLikelihoodScorer, *, top_k: int = 100,
          questions_per_chunk: int = 256, **options) -> dict:
    """Pseudo-label every question of `retrieved` into the folder `output` (every process runs
    this; process 0 writes). Returns the manifest on process 0."""
    return score_retrieved(retrieved, output, scorer, top_k=top_k, questions_per_chunk=questions_per_chunk, **options)
