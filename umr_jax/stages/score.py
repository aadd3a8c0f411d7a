"""The score stage (stage 1): pseudo labels for a retrieval result file by question likelihood
under a frozen T5/mT5, on the runtime's `score` role (every host's devices), resumable, in atomic
shards.

Reads a retrieval file (`score_input`: JSON lines `{id, question, lang, answers?, ctxs}` or a DPR
JSON list), keeps the first `top_k` ctxs of each question, scores every (question, passage) pair
with the `QuestionLikelihoodScorer`, and writes the same records with `ctxs[*].score` = the LM
score (ctxs in the retrieved order) and `scorer` = the scorer's name, into the folder that
`score_folder` describes (shards, `state.json`, `manifest.json` last).

Resume is keyed by (question id, passage id): a rerun into the same folder skips every shard
the state lists as done, reads back the scores of any other finished shard (a shard written
just before a crash, or shards of an earlier chunking) and of `resume_from`, and scores only
the pairs that are still missing. A folder made with other settings is refused.

Multi-host: every process runs the same driver over the same input (the scorer slices each
global batch per process); process 0 alone reads and writes the folder and tells the others,
chunk by chunk, which pairs to score.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data import formats
from umr_jax.data.validation import SkippedRecords
from umr_jax.errors import InputError, with_hint
from umr_jax.labeling.scorer import QuestionLikelihoodScorer, ScorePair
from umr_jax.stages.folder import file_sha256
from umr_jax.stages.score_folder import (MANIFEST, MANIFEST_FORMAT, STATE, VERSION, ScoreFolder, Stage1Settings, dump_json,
                                         chunk_layout, finished_shards, load_json, plan_resume, shard_path)
from umr_jax.stages.score_input import RetrievedInput, inspect_retrieved, read_retrieved

_ERROR_BYTES = 4096  # room for process 0's refusal message when it is broadcast to the others


def load_scorer(model: str | os.PathLike, runtime, *, dtype: str = "bfloat16", reduction: str = "mean",
                max_source_length: int = 512, max_target_length: int = 128, tokens_per_batch: int = 16384,
                vocab_chunk_size: int | None = None, scan_layers: bool = False) -> QuestionLikelihoodScorer:
    """The scorer, its parameters sharded over the `score` mesh (load once, score many files)."""
    options = {} if vocab_chunk_size is None else {"vocab_chunk_size": vocab_chunk_size}
    return QuestionLikelihoodScorer(model, mesh=runtime.mesh("score"), rules=runtime.rules("score"), dtype=dtype,
                                    reduction=reduction, max_source_length=max_source_length,
                                    max_target_length=max_target_length, tokens_per_batch=tokens_per_batch,
                                    scan_layers=scan_layers, **options)


def score(retrieved: str | os.PathLike, output: str | os.PathLike, scorer: QuestionLikelihoodScorer, *, top_k: int = 100,
          questions_per_chunk: int = 256, **options) -> dict:
    """Pseudo-label every question of `retrieved` into the folder `output` (every process runs
    this; process 0 writes). Returns the manifest on process 0."""
    return score_retrieved(retrieved, output, scorer, top_k=top_k, questions_per_chunk=questions_per_chunk, **options)


class Progress:
    """What the driver reports while it runs; the methods do nothing here. Subclass to show a
    progress bar, log, or (in tests) interrupt the run."""

    def started(self, total_pairs: int) -> None:
        """Called once before the first chunk with the number of pairs to label."""

    def resumed(self, pairs: int) -> None:
        """Called with pairs whose scores an earlier output already holds (not scored again)."""

    def scored(self, pairs: int) -> None:
        """Called after each scored batch with the number of pairs it held."""

    def shard_written(self, index: int, path: Path | None) -> None:
        """Called after chunk `index` is done (`path`: its shard, on the writing process; else None)."""


class _Coordinator:
    """Process 0 decides; the others follow. Single-process: no communication at all."""

    def __init__(self):
        import jax

        self.count = jax.process_count()
        self.is_writer = jax.process_index() == 0

    def share(self, array: np.ndarray) -> np.ndarray:
        """Process 0's `array` on every process (every process passes one of the same shape)."""
        if self.count == 1:
            return array
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.broadcast_one_to_all(array))

    def share_error(self, error: InputError | None) -> None:
        """Raise process 0's refusal on every process, or nothing when it had none."""
        if self.count == 1:
            if error is not None:
                raise error
            return
        buffer = np.zeros(_ERROR_BYTES, np.uint8)
        if error is not None:
            text = str(error).encode("utf-8")[: _ERROR_BYTES - 1] or b"error"
            buffer[: len(text)] = np.frombuffer(text, np.uint8)
        buffer = self.share(buffer)
        if error is not None:
            raise error
        if buffer.any():
            raise InputError(bytes(buffer[buffer > 0]).decode("utf-8", errors="replace"))


def _chunks(results: Iterable[formats.RetrievalResult], size: int) -> Iterator[list[formats.RetrievalResult]]:
    chunk: list[formats.RetrievalResult] = []
    for result in results:
        chunk.append(result)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score_retrieved(
    retrieved: str | os.PathLike,
    output: str | os.PathLike,
    scorer,
    *,
    top_k: int = 100,
    questions_per_chunk: int = 256,
    resume_from: str | os.PathLike | None = None,
    skip_invalid: bool = False,
    retrieved_input: RetrievedInput | None = None,
    progress: Progress | None = None,
) -> dict:
    """Pseudo-label every question of `retrieved` into the folder `output`.

    Returns the manifest (on process 0; `{}` on the others), its `last_run` describing this call.

    `scorer` is a `QuestionLikelihoodScorer` (anything with its `name`, `reduction`, `config.dtype`,
    `max_source_length`, `max_target_length` and `score(pairs, progress)`). Chunks of
    `questions_per_chunk` questions are scored together (the scorer buckets and batches their
    pairs across questions), and each chunk's shard is written atomically once it is complete.

    Resumes a folder made with the same settings, scoring only the (question id, passage id)
    pairs not found in its finished shards or in `resume_from` (a retrieval or DPR JSON file
    with LM scores, e.g. a previous partial output; its scores are taken as they are). A folder
    whose labels are complete is returned as it is. Raises `InputError` for invalid input (see
    `read_retrieved`) and for a folder made with other settings, and `FloatingPointError` (before
    writing the chunk's shard) when the scorer returns a non-finite score.

    `retrieved_input`: the result of `inspect_retrieved(retrieved, top_k=top_k, skip_invalid=...)`
    when the caller already ran it (it is run otherwise).
    """
    if questions_per_chunk < 1:
        raise ValueError(f"questions_per_chunk must be >= 1, got {questions_per_chunk}")
    progress = progress or Progress()
    output = storage.local(output)
    settings = Stage1Settings.of(scorer, top_k)
    if retrieved_input is None:
        retrieved_input = inspect_retrieved(retrieved, top_k=top_k, skip_invalid=skip_invalid)
    layout = chunk_layout(retrieved_input, questions_per_chunk)
    num_shards = layout["num_shards"]
    coordinator = _Coordinator()
    stage = ScoreFolder(output)
    with contextlib.ExitStack() as stack:
        plan, error = None, None
        if coordinator.is_writer:
            try:
                stack.enter_context(stage.session())  # refused while another run writes here
                plan = plan_resume(stage, settings, layout, retrieved_input.path, resume_from, retrieved_input.known_languages)
            except InputError as err:
                error = err
        coordinator.share_error(error)

        done_mask = np.zeros(num_shards, np.bool_)
        if coordinator.is_writer:
            done_mask[sorted(plan.done)] = True
        done_mask = coordinator.share(done_mask)
        if coordinator.is_writer:
            if plan.complete:
                manifest = load_json(output / MANIFEST, MANIFEST_FORMAT)
                return {**manifest, "last_run": {"pairs_scored": 0, "pairs_resumed": manifest["pairs"], "elapsed_seconds": 0.0}}
            storage.remove(output / MANIFEST)
            plan.state["runs"] += 1
            dump_json(output / STATE, plan.state)
        elif done_mask.all():  # nothing left to score: process 0 only writes what remains
            return {}

        known = plan.known if plan else {}
        skipped = SkippedRecords() if skip_invalid else None
        started_at, seconds, pairs_scored, pairs_resumed = time.monotonic(), 0.0, 0, 0
        progress.started(retrieved_input.pairs)
        for index, chunk in enumerate(_chunks(read_retrieved(retrieved, top_k=top_k, skip_invalid=skipped,
                                                                   known_languages=retrieved_input.known_languages), questions_per_chunk)):
            pairs = [ScorePair((r.id, ctx.id), r.question, ctx.title, ctx.text, r.lang) for r in chunk for ctx in r.ctxs]
            if done_mask[index]:
                pairs_resumed += len(pairs)
                progress.resumed(len(pairs))
                continue
            scores = np.zeros(len(pairs), np.float32)
            needed = np.ones(len(pairs), np.bool_)
            if coordinator.is_writer:
                for j, pair in enumerate(pairs):
                    question_id, passage_id = pair.key
                    score = known.get(question_id, {}).get(passage_id)
                    if score is not None:
                        scores[j], needed[j] = score, False
            needed = coordinator.share(needed)
            if not needed.all():
                pairs_resumed += int((~needed).sum())
                progress.resumed(int((~needed).sum()))
            to_score = [pairs[j] for j in np.flatnonzero(needed)]
            if to_score:
                t0 = time.monotonic()
                scores[needed] = scorer.score(to_score, progress=progress.scored)
                seconds += time.monotonic() - t0
                bad = np.flatnonzero(~np.isfinite(scores))
                if bad.size:  # never write a shard no reader accepts
                    raise with_hint(FloatingPointError(f"the scorer gave {bad.size} non-finite score(s), the first for (question id, "
                                                       f"passage id) {pairs[bad[0]].key}; score in float32 to check the numerics"),
                                    "--dtype", "rerun with --dtype float32")
                pairs_scored += len(to_score)
            path = None
            if coordinator.is_writer:
                path = shard_path(output, index, num_shards)
                formats.write_retrieval(path, _labelled(chunk, scores, settings.scorer))
                stage.keep()
                plan.state.setdefault("shard_sha256", {})[path.name] = file_sha256(path)
                for result in chunk:
                    known.pop(result.id, None)
                plan.state["shards_done"] = sorted(set(plan.state["shards_done"]) | {index})
                plan.state["pairs_scored"] += len(to_score)
                plan.state["scoring_seconds"] += seconds
                seconds = 0.0
                dump_json(output / STATE, plan.state)
            progress.shard_written(index, path)

        if not coordinator.is_writer:
            return {}
        if retrieved_input.questions == 0:  # an empty input still gets its (empty) single shard
            formats.write_retrieval(shard_path(output, 0, num_shards), [])
            plan.state["shards_done"] = [0]
            dump_json(output / STATE, plan.state)
        for index, count, path in finished_shards(output):
            if count != num_shards:
                storage.remove(path)  # an earlier chunking's shards, all rescored or reused by now
        state = plan.state
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": VERSION,
            **dataclasses.asdict(settings),
            "retrieved": retrieved_input.path,
            "questions": retrieved_input.questions,
            "pairs": retrieved_input.pairs,
            "skipped": retrieved_input.skipped,
            "shards": [shard_path(output, i, num_shards).name for i in range(num_shards)],
            "pairs_scored": state["pairs_scored"],
            "scoring_seconds": round(state["scoring_seconds"], 3),
            "pairs_per_second": round(state["pairs_scored"] / state["scoring_seconds"], 2) if state["scoring_seconds"] > 0 else None,
            "runs": state["runs"],
            "last_run": {"pairs_scored": pairs_scored, "pairs_resumed": pairs_resumed, "elapsed_seconds": round(time.monotonic() - started_at, 3)},
        }
        dump_json(output / MANIFEST, manifest)
        return manifest


def _labelled(chunk: Sequence[formats.RetrievalResult], scores: np.ndarray, scorer_name: str) -> Iterator[formats.RetrievalResult]:
    """The chunk's records with ctxs[*].score = the LM score, in the retrieved order."""
    position = 0
    for result in chunk:
        ctxs = tuple(dataclasses.replace(ctx, score=float(scores[position + i])) for i, ctx in enumerate(result.ctxs))
        position += len(ctxs)
        yield dataclasses.replace(result, ctxs=ctxs, scorer=scorer_name)
